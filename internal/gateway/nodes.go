package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Bounds of a drain: the sandboxes stopped and moved at once (a move
// copies files on both nodes' disks), and the time one stop may take.
const (
	drainParallel = 2
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
		MemoryBudgetBytes: n.MemoryBudget, MemoryUsedBytes: n.MemoryUsed, Labels: n.Labels, HeartbeatAt: n.ReportedAt.UTC()}
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
// sandbox is placed on it), then each of its sandboxes is stopped if it
// runs and moved, with its files, to the least loaded other node that
// fits (move.go). The answer lists what was stopped, moved (and where)
// and what failed (and why); those stay on the node, and a drain run
// again tries them again.
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
	all, err := s.sandboxesOn(r.Context(), n, "")
	if err != nil {
		s.log.WarnContext(r.Context(), "listing a drained node's sandboxes", "node", name, "err", err)
		writeError(w, nodeUnavailable(name))
		return
	}
	out := api.DrainResult{Stopped: []string{}, Moved: []api.DrainMove{}, Failed: map[string]string{}}
	var mu sync.Mutex
	sem := make(chan struct{}, drainParallel)
	var wg sync.WaitGroup
	// A move that started finishes (or is undone) even if the caller
	// leaves: half a move would leave the sandbox held.
	ctx := context.WithoutCancel(r.Context())
	for _, sb := range all {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res := s.drainOne(ctx, n, sb)
			mu.Lock()
			defer mu.Unlock()
			if res.stopped {
				out.Stopped = append(out.Stopped, sb.ID)
			}
			if res.err != nil {
				out.Failed[sb.ID] = res.err.Error()
			} else {
				out.Moved = append(out.Moved, api.DrainMove{ID: sb.ID, Node: res.to})
			}
		})
	}
	wg.Wait()
	slices.Sort(out.Stopped)
	slices.SortFunc(out.Moved, func(a, b api.DrainMove) int { return strings.Compare(a.ID, b.ID) })
	if n2, err := s.place.node(r.Context(), name); err == nil {
		n = n2
	}
	out.Node = wireNode(n)
	writeJSON(w, http.StatusOK, out)
}

// listed is a sandbox as the gateway needs it from a node's list.
type listed struct {
	ID     string            `json:"id"`
	Tenant string            `json:"tenant"`
	Status api.SandboxStatus `json:"status"`
	Limits struct {
		MemoryBytes int64 `json:"memoryBytes"`
	} `json:"limits"`
}

// sandboxesOn lists node n's sandboxes (with status, when status is set),
// page by page.
func (s *Server) sandboxesOn(ctx context.Context, n Node, status api.SandboxStatus) ([]listed, error) {
	var all []listed
	token := ""
	for range 1000 { // at most a million sandboxes
		q := url.Values{}
		if status != "" {
			q.Set("status", string(status))
		}
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
	return s.callNodeWith(ctx, n, method, path, t, nil, out)
}

// callNodeWith is callNode with in, when not nil, as the JSON body.
func (s *Server) callNodeWith(ctx context.Context, n Node, method, path, t string, in, out any) error {
	var reqBody io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		reqBody = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, reqBody)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
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
