// Package tenant is sandboxd's tenancy layer: who is calling (the Caller a
// request carries in its context), how a tenant's names are kept apart
// from another's (Scope: "acme/demo" inside the daemon for tenant acme's
// sandbox "demo"), and the API keys that name tenants (keys.go). It owns
// no sandboxes: the manager and the API edge ask it, in one call each,
// which names a caller may touch. It must never decide anything from a
// name a caller sent without scoping it first.
package tenant

import (
	"context"
	"crypto/subtle"
	"strings"

	"github.com/sandboxd/sandboxd/api"
)

// Sep separates a tenant from a name in a scoped name. Sandbox IDs,
// tenant names and the other names tenants choose never contain it.
const Sep = "/"

// Default is the name under which the admin namespace (the token file's
// key and admin keys) is shown and filtered; it cannot name a key.
const Default = "default"

// Caller is who made a request.
type Caller struct {
	// Name is the key's name; "" for the token file's key.
	Name string
	// Admin callers act in the admin namespace and see every tenant.
	Admin bool
	// As is the tenant an admin acts as (the Sandbox-Tenant header):
	// its names are that tenant's. "" is the admin namespace.
	As string
}

// Namespace is the tenant whose names the caller's names are: the admin
// namespace ("") or As for admins, the key's name for a tenant.
func (c Caller) Namespace() string {
	if c.Admin {
		return c.As
	}
	return c.Name
}

// Scope returns the daemon-wide name of the caller's name n.
func (c Caller) Scope(n string) string { return Scope(c.Namespace(), n) }

// Owns reports whether the caller may touch the scoped name: admins own
// everything, a tenant its own names.
func (c Caller) Owns(scoped string) bool { return c.Admin || Of(scoped) == c.Name }

// Sees reports whether the caller may see things of tenant t ("" for the
// admin namespace).
func (c Caller) Sees(t string) bool { return c.Admin || t == c.Name }

// admin is the caller of everything that does not come from a request
// with credentials (the daemon's own work, unit tests).
var admin = Caller{Admin: true}

type ctxKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the caller ctx carries; an admin when none (only
// the authenticating edge puts callers in contexts, so a context without
// one is the daemon's own).
func FromContext(ctx context.Context) Caller {
	if c, ok := ctx.Value(ctxKey{}).(Caller); ok {
		return c
	}
	return admin
}

// ScopeContext scopes n for the caller of ctx: the one call a route makes
// to turn a name from a URL or body into the daemon-wide name.
func ScopeContext(ctx context.Context, n string) string { return FromContext(ctx).Scope(n) }

// Scope returns tenant t's name n daemon-wide: n itself in the admin
// namespace (t == ""), "t/n" otherwise.
func Scope(t, n string) string {
	if t == "" {
		return n
	}
	return t + Sep + n
}

// Split splits a scoped name into its tenant ("" for the admin
// namespace) and the tenant's name.
func Split(scoped string) (t, n string) {
	if t, n, ok := strings.Cut(scoped, Sep); ok {
		return t, n
	}
	return "", scoped
}

// Of is the tenant of a scoped name ("" for the admin namespace).
func Of(scoped string) string { t, _ := Split(scoped); return t }

// Local is the name a scoped name has for its tenant: what the tenant
// sees, and what names it inside the sandbox (hostname, preview host).
func Local(scoped string) string { _, n := Split(scoped); return n }

// Display is the tenant's name as shown: Default for the admin namespace.
func Display(t string) string {
	if t == "" {
		return Default
	}
	return t
}

// ValidateName checks a key (tenant) name: a DNS label like a sandbox ID,
// at most 32 bytes, and not Default. The error is an *api.Error.
func ValidateName(name string) error {
	if name == Default {
		return api.Errorf(api.CodeValidationFailed, "key name %q is reserved for the admin namespace", name)
	}
	if len(name) > 32 {
		return api.Errorf(api.CodeValidationFailed, "key name is %d bytes long; at most 32 are allowed", len(name))
	}
	if err := api.ValidateSandboxID(name); err != nil {
		return api.Errorf(api.CodeValidationFailed, "key name %q: a DNS label of a-z, 0-9 and '-' is needed", name)
	}
	return nil
}

// Identify returns the caller a presented credential names: the holder of
// adminToken (an admin of the admin namespace) or an API key of keys (nil:
// no keys). Nodes and gateways identify callers the same way.
func Identify(got, adminToken string, keys *Keys) (Caller, bool) {
	if got == "" {
		return Caller{}, false
	}
	if subtle.ConstantTimeCompare([]byte(got), []byte(adminToken)) == 1 {
		return Caller{Admin: true}, true
	}
	return keys.Authenticate(got)
}

// ActAs lets an admin act in a tenant's namespace when a request's
// Sandbox-Tenant header names one (header; "default": the admin
// namespace). A tenant's key cannot: FORBIDDEN.
func ActAs(c *Caller, header string) *api.Error {
	if header == "" {
		return nil
	}
	if !c.Admin {
		return api.Errorf(api.CodeForbidden, "the %s header needs an admin key", api.TenantHeader)
	}
	if header == Default {
		return nil
	}
	if err := ValidateName(header); err != nil {
		return err.(*api.Error)
	}
	c.As = header
	return nil
}
