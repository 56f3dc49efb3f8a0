package gateway

import (
	"context"
	"net/http"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Tenancy at the gateway (docs/cluster.md, "Tenants"). The gateway
// authenticates a caller with the cluster's token or an API key of the
// cluster's keys (Kubernetes Secrets that every node reads too), scopes
// the sandbox IDs it places and looks up to the caller's tenant (a
// tenant's sandbox "demo" is the Sandbox resource TENANT.demo), and
// forwards the caller's credentials unchanged: a node authenticates them
// again against the same keys and never takes a tenant from the gateway's
// word, so nothing a caller sends through the gateway makes a node accept
// another tenant's identity.

// authenticate returns the caller r's credentials name.
func (s *Server) authenticate(r *http.Request) (tenant.Caller, bool) {
	got, ok := bearerToken(r)
	if !ok {
		got, ok = tokenFromSubprotocol(r)
	}
	if !ok {
		return tenant.Caller{}, false
	}
	return tenant.Identify(got, s.opts.Token, s.opts.Keys)
}

// adminOnly answers FORBIDDEN unless the caller is an admin.
func adminOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !tenant.FromContext(r.Context()).Admin {
			writeError(w, api.Errorf(api.CodeForbidden, "%s %s needs an admin key", r.Method, r.URL.Path))
			return
		}
		next(w, r)
	}
}

// credentials copies the headers that say who r's caller is onto out: a
// call the gateway makes to a node for a caller (a list's page) is
// authenticated by the node as the caller's own.
func credentials(out, r *http.Request) {
	for _, h := range []string{"Authorization", api.TenantHeader} {
		if v := r.Header.Get(h); v != "" {
			out.Header.Set(h, v)
		}
	}
	if out.Header.Get("Authorization") == "" {
		// A WebSocket's subprotocol token: the list is no WebSocket.
		if tok, ok := tokenFromSubprotocol(r); ok {
			out.Header.Set("Authorization", "Bearer "+tok)
		}
	}
}

// previewLookup is a Directory that finds tenants' sandboxes by their own
// ID (KubeDirectory).
type previewLookup interface {
	PlacementsOf(ctx context.Context, id string) ([]string, error)
}

// tenantPreviewNode returns the node of a tenant's sandbox named id by a
// preview host (which names no tenant; the node checks the host's token,
// which tells tenants' sandboxes of one ID apart). When tenants' sandboxes
// of that ID are on several nodes, the first by name is asked: docs/cluster.md
// says so.
func (s *Server) tenantPreviewNode(r *http.Request, id string) (Node, error) {
	pl, ok := s.opts.Directory.(previewLookup)
	if !ok {
		return Node{}, ErrNotPlaced
	}
	// Cached beside placements under a key no scoped ID has ("*" is no
	// tenant's name), so a page's many requests ask the API once.
	key := "*" + tenant.Sep + id
	s.place.mu.Lock()
	pl0, cached := s.place.placed[key]
	s.place.mu.Unlock()
	if cached && s.place.now().Sub(pl0.at) < placementTTL {
		return s.nodeOf(r, pl0.node)
	}
	nodes, err := pl.PlacementsOf(r.Context(), id)
	if err != nil {
		return Node{}, err
	}
	if len(nodes) == 0 {
		return Node{}, ErrNotPlaced
	}
	s.place.remember(key, nodes[0])
	return s.nodeOf(r, nodes[0])
}
