package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Bounds of a merged list: the time each node has to answer, and the
// size of its answer (a full page of 1,000 sandboxes is about 1 MiB).
const (
	listTimeout  = 15 * time.Second
	maxListBytes = 16 << 20
)

// listSandboxes is GET /v1/sandboxes: every ready node's page after the
// same position, merged in ID order and cut to the limit. Each node
// validates the query (filters, token); the next page token is a node's
// own kind, at the last sandbox kept, so pages stay correct across nodes.
// Sandboxes of unavailable nodes are left out (the answer's
// X-Sandboxd-Unavailable-Nodes header names those nodes).
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	limit := api.MaxListLimit
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > api.MaxListLimit {
			writeError(w, api.Errorf(api.CodeValidationFailed, "limit %.16q: want 1 to %d", l, api.MaxListLimit))
			return
		}
		limit = n
	}
	nodes, err := s.place.list(r.Context())
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	pages := make([]nodePage, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if !n.Ready {
			pages[i].unavailable = true
			continue
		}
		wg.Go(func() { pages[i] = s.listNode(r, n) })
	}
	wg.Wait()
	var items []listItem
	more := false
	var down []string
	for i, p := range pages {
		if p.err != nil {
			writeError(w, p.err)
			return
		}
		if p.unavailable {
			down = append(down, nodes[i].Name)
			continue
		}
		items = append(items, p.items...)
		more = more || p.more
	}
	slices.SortFunc(items, func(a, b listItem) int { return strings.Compare(a.key, b.key) })
	if len(items) > limit {
		items, more = items[:limit], true
	}
	out := struct {
		Sandboxes     []json.RawMessage `json:"sandboxes"`
		NextPageToken string            `json:"nextPageToken,omitempty"`
	}{Sandboxes: make([]json.RawMessage, 0, len(items))}
	for _, it := range items {
		out.Sandboxes = append(out.Sandboxes, it.raw)
	}
	if more && len(items) > 0 {
		out.NextPageToken = httpapi.PageToken(items[len(items)-1].key)
	}
	if len(down) > 0 {
		w.Header().Set("X-Sandboxd-Unavailable-Nodes", strings.Join(down, ","))
	}
	writeJSON(w, http.StatusOK, out)
}

type nodePage struct {
	items       []listItem
	more        bool
	unavailable bool
	err         *api.Error
}

type listItem struct {
	// key is the sandbox's scoped ID, the order of every node's list.
	key string
	raw json.RawMessage
}

// listNode asks one node for its page; a node that does not answer counts
// as unavailable, one that refuses the query fails the list with its
// error.
func (s *Server) listNode(r *http.Request, n Node) nodePage {
	ctx, cancel := context.WithTimeout(r.Context(), listTimeout)
	defer cancel()
	u, err := url.Parse(n.URL)
	if err != nil {
		return nodePage{unavailable: true}
	}
	u = u.JoinPath("/v1/sandboxes")
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nodePage{unavailable: true}
	}
	credentials(req, r) // the node lists what the caller may see
	resp, err := s.fwd.client.Do(req)
	if err != nil {
		s.log.WarnContext(r.Context(), "node did not answer a list", "node", n.Name, "err", err)
		return nodePage{unavailable: true}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
	if err != nil || len(body) > maxListBytes {
		s.log.WarnContext(r.Context(), "node's list unreadable", "node", n.Name, "err", err, "bytes", len(body))
		return nodePage{unavailable: true}
	}
	if resp.StatusCode != http.StatusOK {
		var e api.Error
		if json.Unmarshal(body, &e) != nil || e.Code == "" || resp.StatusCode >= 500 {
			return nodePage{unavailable: true}
		}
		return nodePage{err: &e}
	}
	var page struct {
		Sandboxes     []json.RawMessage `json:"sandboxes"`
		NextPageToken string            `json:"nextPageToken"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nodePage{err: api.Errorf(api.CodeInternal, "node %s answered a list the gateway cannot read", n.Name)}
	}
	out := nodePage{more: page.NextPageToken != "", items: make([]listItem, 0, len(page.Sandboxes))}
	for _, raw := range page.Sandboxes {
		var sb struct {
			ID     string `json:"id"`
			Tenant string `json:"tenant"`
		}
		if json.Unmarshal(raw, &sb) != nil {
			continue
		}
		t := sb.Tenant
		if t == tenant.Default {
			t = ""
		}
		withN, ok := withNode(raw, n.Name)
		if !ok {
			continue
		}
		out.items = append(out.items, listItem{key: tenant.Scope(t, sb.ID), raw: json.RawMessage(strings.TrimSpace(string(withN)))})
	}
	return out
}
