package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// maxKeyBody bounds a key's create body, as on a node.
const maxKeyBody = 4 << 10

// keyRoutes serves the cluster's API keys (admins only): they live in
// Kubernetes (internal/kubekeys), so a key made here works on every
// gateway and node.
func (s *Server) keyRoutes() {
	auth := s.authenticated
	s.mux.HandleFunc("POST /v1/keys", auth(adminOnly(s.createKey)))
	s.mux.HandleFunc("GET /v1/keys", auth(adminOnly(s.listKeys)))
	s.mux.HandleFunc("DELETE /v1/keys/{name}", auth(adminOnly(s.removeKey)))
	s.mux.HandleFunc("POST /v1/keys/{name}/rotate", auth(adminOnly(s.rotateKey)))
}

func (s *Server) keys(w http.ResponseWriter) (*tenant.Keys, bool) {
	if s.opts.Keys == nil {
		writeError(w, api.Errorf(api.CodeNotFound, "this gateway has no API keys"))
		return nil, false
	}
	return s.opts.Keys, true
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	body, err := readCreateBody(w, r)
	if err != nil || len(body) > maxKeyBody {
		writeError(w, api.Errorf(api.CodeRequestTooLarge, "the body is over %d bytes or did not arrive in time", maxKeyBody))
		return
	}
	var req api.KeyCreateRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, api.Errorf(api.CodeInvalidJSON, "the body is not a key's JSON: %v", err))
		return
	}
	q, e := tenant.QuotaOfRequest(req)
	if e != nil {
		writeError(w, e)
		return
	}
	k, secret, err := keys.Create(r.Context(), req.Name, req.Admin, q)
	if err != nil {
		s.keyFailure(w, r, err)
		return
	}
	s.log.Info("API key created", "name", k.Name, "admin", k.Admin)
	writeJSON(w, http.StatusCreated, k.Created(secret))
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	k, secret, err := keys.Rotate(r.Context(), r.PathValue("name"))
	if err != nil {
		s.keyFailure(w, r, err)
		return
	}
	s.log.Info("API key rotated", "name", k.Name)
	writeJSON(w, http.StatusOK, k.Created(secret))
}

func (s *Server) removeKey(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := keys.Remove(r.Context(), name); err != nil {
		s.keyFailure(w, r, err)
		return
	}
	s.log.Info("API key removed", "name", name)
	w.WriteHeader(http.StatusNoContent)
}

// listKeys is GET /v1/keys: the cluster's keys, each tenant's usage the
// sum of every ready node's (the X-Sandboxd-Unavailable-Nodes header
// names the nodes left out).
func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	list, err := keys.List(r.Context())
	if err != nil {
		s.keyFailure(w, r, err)
		return
	}
	usage, down, err := s.keyUsage(r)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	out := api.KeyList{Keys: make([]api.Key, 0, len(list))}
	for _, k := range list {
		wk := k.Wire()
		if !k.Admin {
			wk.Usage = usage[k.Name]
		}
		out.Keys = append(out.Keys, wk)
	}
	if len(down) > 0 {
		w.Header().Set("X-Sandboxd-Unavailable-Nodes", strings.Join(down, ","))
	}
	writeJSON(w, http.StatusOK, out)
}

// keyUsage sums the usage every ready node reports per tenant (each node
// has the same keys and counts its own sandboxes).
func (s *Server) keyUsage(r *http.Request) (map[string]api.Usage, []string, error) {
	nodes, err := s.place.list(r.Context())
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	sum := map[string]api.Usage{}
	var down []string
	var wg sync.WaitGroup
	for _, n := range nodes {
		if !n.Ready {
			down = append(down, n.Name)
			continue
		}
		wg.Go(func() {
			list, err := s.nodeKeys(r.Context(), n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.log.WarnContext(r.Context(), "node did not answer its keys' usage", "node", n.Name, "err", err)
				down = append(down, n.Name)
				return
			}
			for _, k := range list.Keys {
				u := sum[k.Name]
				u.Sandboxes += k.Usage.Sandboxes
				u.Running += k.Usage.Running
				u.Memory += k.Usage.Memory
				sum[k.Name] = u
			}
		})
	}
	wg.Wait()
	return sum, down, nil
}

func (s *Server) nodeKeys(ctx context.Context, n Node) (api.KeyList, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	u, err := url.Parse(n.URL)
	if err != nil {
		return api.KeyList{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.JoinPath("/v1/keys").String(), nil)
	if err != nil {
		return api.KeyList{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.opts.Token)
	resp, err := s.fwd.client.Do(req)
	if err != nil {
		return api.KeyList{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return api.KeyList{}, errors.New(resp.Status)
	}
	var out api.KeyList
	err = json.NewDecoder(io.LimitReader(resp.Body, maxListBytes)).Decode(&out)
	return out, err
}

// keyFailure answers an error of the key store.
func (s *Server) keyFailure(w http.ResponseWriter, r *http.Request, err error) {
	var e *api.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, tenant.ErrKeyNotFound):
		e = api.Errorf(api.CodeKeyNotFound, "%v", err)
	case errors.Is(err, tenant.ErrKeyExists):
		e = api.Errorf(api.CodeKeyExists, "%v", err)
	default:
		s.writeFailure(w, r, kubeErr(err))
		return
	}
	writeError(w, e)
}
