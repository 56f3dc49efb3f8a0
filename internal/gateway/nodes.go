package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Bounds of a drain: the sandboxes stopped at once, and the time one stop
// may take.
const (
	drainParallel = 4
	stopTimeout   = 2 * time.Minute
)

func wireNode(n Node) api.Node {
	state := api.NodeReady
	switch {
	case !n.Ready:
		state = api.NodeUnavailable
	case n.Cordoned:
		state = api.NodeCordoned
	}
	return api.Node{Name: n.Name, URL: n.URL, State: state, Cordoned: n.Cordoned,
		Running: n.Running, Total: n.Total, MaxRunning: n.MaxRunning,
		MemoryBudgetBytes: n.MemoryBudget, MemoryUsedBytes: n.MemoryUsed, HeartbeatAt: n.ReportedAt.UTC()}
}

// listNodes is GET /v1/nodes.
func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) {
	s.place.invalidate()
	nodes, err := s.place.list(r.Context())
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	out := api.NodeList{Nodes: make([]api.Node, 0, len(nodes))}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, wireNode(n))
	}
	writeJSON(w, http.StatusOK, out)
}

// nodeName returns the validated {name} of the route (a DNS label, like
// a sandbox ID), or answers the error.
func nodeName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if api.ValidateSandboxID(name) != nil {
		writeError(w, api.Errorf(api.CodeValidationFailed, "node name %.64q: want a DNS label of 1-63 characters", name))
		return "", false
	}
	return name, true
}

// uncordonNode is POST /v1/nodes/{name}/uncordon.
func (s *Server) uncordonNode(w http.ResponseWriter, r *http.Request) {
	if n, ok := s.setCordoned(w, r, false); ok {
		writeJSON(w, http.StatusOK, wireNode(n))
	}
}

// setCordoned cordons or uncordons the route's node and returns it as
// placement sees it afterwards, or answers the error.
func (s *Server) setCordoned(w http.ResponseWriter, r *http.Request, cordoned bool) (Node, bool) {
	name, ok := nodeName(w, r)
	if !ok {
		return Node{}, false
	}
	if err := s.opts.Directory.SetCordoned(r.Context(), name, cordoned); err != nil {
		s.writeFailure(w, r, err)
		return Node{}, false
	}
	s.place.invalidate()
	n, err := s.place.node(r.Context(), name)
	if err != nil {
		s.writeFailure(w, r, err)
		return Node{}, false
	}
	return n, true
}

// drainNode is POST /v1/nodes/{name}/drain: the node is cordoned (no new
// sandbox is placed on it), then its running sandboxes are stopped, files
// kept. They stay placed on the node: a later call starts them there
// again. Moving them to other nodes is not built yet (docs/cluster.md).
func (s *Server) drainNode(w http.ResponseWriter, r *http.Request) {
	n, ok := s.setCordoned(w, r, true)
	if !ok {
		return
	}
	name := n.Name
	if !n.Ready {
		writeError(w, nodeUnavailable(name))
		return
	}
	running, err := s.runningOn(r.Context(), n)
	if err != nil {
		s.log.WarnContext(r.Context(), "listing a drained node's sandboxes", "node", name, "err", err)
		writeError(w, nodeUnavailable(name))
		return
	}
	out := api.DrainResult{Stopped: []string{}, Failed: map[string]string{}}
	var mu sync.Mutex
	sem := make(chan struct{}, drainParallel)
	var wg sync.WaitGroup
	for _, sb := range running {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := s.stopOn(r.Context(), n, sb)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				out.Failed[sb.ID] = err.Error()
			} else {
				out.Stopped = append(out.Stopped, sb.ID)
			}
		})
	}
	wg.Wait()
	if n2, err := s.place.node(r.Context(), name); err == nil {
		n = n2
	}
	out.Node = wireNode(n)
	writeJSON(w, http.StatusOK, out)
}

// listed is a sandbox as the gateway needs it from a node's list.
type listed struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
}

// runningOn lists node n's running sandboxes, page by page.
func (s *Server) runningOn(ctx context.Context, n Node) ([]listed, error) {
	var all []listed
	token := ""
	for range 1000 { // at most a million sandboxes
		q := url.Values{"status": {string(api.StatusRunning)}}
		if token != "" {
			q.Set("pageToken", token)
		}
		var page struct {
			Sandboxes     []listed `json:"sandboxes"`
			NextPageToken string   `json:"nextPageToken"`
		}
		pctx, cancel := context.WithTimeout(ctx, listTimeout)
		err := s.callNode(pctx, n, http.MethodGet, "/v1/sandboxes?"+q.Encode(), "", &page)
		cancel()
		if err != nil {
			return nil, err
		}
		all = append(all, page.Sandboxes...)
		if token = page.NextPageToken; token == "" {
			return all, nil
		}
	}
	return all, nil
}

// stopOn stops one sandbox of node n.
func (s *Server) stopOn(ctx context.Context, n Node, sb listed) error {
	ctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	t := sb.Tenant
	if t == tenant.Default {
		t = ""
	}
	return s.callNode(ctx, n, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(sb.ID)+"/stop", t, nil)
}

// callNode makes one JSON call of the gateway's own to node n, as the
// admin (acting as tenant t when t is set), and decodes a 2xx answer into
// out (nil: the answer is dropped).
func (s *Server) callNode(ctx context.Context, n Node, method, path, t string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.opts.Token)
	if t != "" {
		req.Header.Set(api.TenantHeader, t)
	}
	resp, err := s.fwd.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return &e
		}
		return fmt.Errorf("node %s answered %s", n.Name, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}
