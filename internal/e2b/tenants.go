package e2b

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Tenants (docs/tenants.md, docs/e2b.md#api-keys). A tenant's API key is
// an E2B API key: what it creates through this layer is the tenant's. The
// layer still calls the daemon's API with the admin token, but every call
// made for a tenant carries the tenant in Sandbox-Tenant (tenantTransport,
// from the context), so the daemon scopes it as it scopes the tenant's own
// calls: no call made for one tenant can reach another's sandbox. The
// table records each sandbox's tenant; control calls on a sandbox of
// another tenant answer 404, before anything else looks at it.

// KeyAuth authenticates API keys (tenant.Keys).
type KeyAuth interface {
	Authenticate(secret string) (tenant.Caller, bool)
}

type tenantKey struct{}

// withTenant returns ctx for calls made for tenant ns ("" the admin
// namespace).
func withTenant(ctx context.Context, ns string) context.Context {
	return context.WithValue(ctx, tenantKey{}, ns)
}

// tenantOf is the tenant ctx's calls are made for.
func tenantOf(ctx context.Context) string {
	ns, _ := ctx.Value(tenantKey{}).(string)
	return ns
}

// tenantTransport adds the Sandbox-Tenant header of the request's
// context to every call of the daemon's API.
type tenantTransport struct{ base http.RoundTripper }

func (t tenantTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if ns := tenantOf(req.Context()); ns != "" {
		req = req.Clone(req.Context())
		req.Header.Set(api.TenantHeader, ns)
	}
	return t.base.RoundTrip(req)
}

// callerNamespace authenticates the control plane's X-API-KEY (or bearer
// token): the admin token and admin keys act in the admin namespace, a
// tenant's key in its tenant's.
func (s *Server) callerNamespace(r *http.Request) (string, bool) {
	key := r.Header.Get("X-API-KEY")
	if key == "" {
		if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			key = v
		}
	}
	if key == "" {
		return "", false
	}
	if subtle.ConstantTimeCompare([]byte(key), []byte(s.opts.Token)) == 1 {
		return "", true
	}
	if s.opts.Keys == nil {
		return "", false
	}
	c, ok := s.opts.Keys.Authenticate(key)
	if !ok {
		return "", false
	}
	return c.Namespace(), true
}
