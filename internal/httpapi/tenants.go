package httpapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/secret"
	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Tenancy at the edge (docs/tenants.md). authenticated puts the caller in
// the request's context; sandboxID scopes the {id} of every route to the
// caller's tenant, so a route that takes its ID from sandboxID cannot
// reach another tenant's sandbox: the scoped ID names none, and the
// answer is the 404 of an ID nobody has. Routes that name other things a
// tenant owns scope them with scopeName; answers give names back with
// tenant.Local.

// authenticate returns the caller r's credentials name: the token file's
// key (an admin of the admin namespace) or an API key.
func (s *Server) authenticate(r *http.Request) (tenant.Caller, bool) {
	got, ok := bearerToken(r)
	if !ok {
		got, ok = tokenFromSubprotocol(r) // browsers' WebSockets
	}
	if !ok {
		return tenant.Caller{}, false
	}
	return tenant.Identify(got, s.opts.Token, s.opts.Keys)
}

// callerOf is the caller of an authenticated request.
func callerOf(r *http.Request) tenant.Caller { return tenant.FromContext(r.Context()) }

// scopeName turns a name a tenant chose (a sandbox ID, a snapshot's,
// volume's or secret's name) into the daemon-wide name: the one call a
// route makes before it looks anything up.
func scopeName(r *http.Request, name string) string { return callerOf(r).Scope(name) }

// adminOnly answers FORBIDDEN unless the caller is an admin.
func (s *Server) adminOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !callerOf(r).Admin {
			writeAPIError(w, api.Errorf(api.CodeForbidden, "%s %s needs an admin key", r.Method, r.URL.Path))
			return
		}
		next(w, r)
	}
}

// wireTenant is the tenant of a scoped ID as the wire shows it.
func wireTenant(scoped string) string { return tenant.Display(tenant.Of(scoped)) }

// classifyTenancy gives the errors of tenancy their codes; nil for others.
func classifyTenancy(err error) *api.Error {
	var q *sandbox.QuotaError
	switch {
	case errors.As(err, &q):
		return &api.Error{Code: api.CodeQuotaExceeded, Message: q.Error(),
			Details: map[string]any{"quota": q.Quota, "limit": q.Limit, "used": q.Used}}
	case errors.Is(err, tenant.ErrKeyNotFound):
		return &api.Error{Code: api.CodeKeyNotFound, Message: err.Error()}
	case errors.Is(err, tenant.ErrKeyExists):
		return &api.Error{Code: api.CodeKeyExists, Message: err.Error()}
	}
	return nil
}

// localMessage removes the caller's own tenant prefix from IDs in an
// error message ("acme/demo" → "demo"), so a tenant reads its own names.
func localMessage(r *http.Request, msg string) string {
	if ns := callerOf(r).Namespace(); ns != "" {
		return strings.NewReplacer(ns+tenant.Sep, "", ns+flatSep, "", ns+image.TenantSep, "").Replace(msg)
	}
	return msg
}

// bearerCaller is authenticate for the Authorization header alone (what
// preview requests may carry).
func (s *Server) bearerCaller(r *http.Request) (tenant.Caller, bool) {
	got, ok := bearerToken(r)
	if !ok {
		return tenant.Caller{}, false
	}
	return tenant.Identify(got, s.opts.Token, s.opts.Keys)
}

// flatSep separates a tenant from a name in stores whose names are file
// names (no '/'): snapshots and secrets. Names a caller chooses may not
// contain it, so the admin namespace's names never look scoped.
const flatSep = ".-"

// scopeFlat is scopeName for a store of file names, whose names valid
// checks; a bad name is code.
func scopeFlat(r *http.Request, name string, valid func(string) error, code api.Code) (string, *api.Error) {
	if strings.Contains(name, flatSep) {
		return "", api.Errorf(code, "name %.80q: %q is reserved", name, flatSep)
	}
	ns := callerOf(r).Namespace()
	if ns == "" {
		return name, nil
	}
	scoped := ns + flatSep + name
	if err := valid(scoped); err != nil {
		return "", api.Errorf(code, "name %q is too long for tenant %s: at most %d characters", name, ns, 63-len(ns)-len(flatSep))
	}
	return scoped, nil
}

// splitFlat splits a name scoped by scopeFlat into its tenant and name.
func splitFlat(scoped string) (t, name string) {
	if t, name, ok := strings.Cut(scoped, flatSep); ok && tenant.ValidateName(t) == nil {
		return t, name
	}
	return "", scoped
}

func localFlat(scoped string) string { _, n := splitFlat(scoped); return n }

// scopeSnapshot and scopeSecret scope snapshot and secret names.
func scopeSnapshot(r *http.Request, name string) (string, *api.Error) {
	return scopeFlat(r, name, snapshot.ValidateName, api.CodeInvalidSnapshotName)
}

func scopeSecret(r *http.Request, name string) (string, *api.Error) {
	return scopeFlat(r, name, secret.ValidateName, api.CodeValidationFailed)
}

func tenantOfFlat(scoped string) string { t, _ := splitFlat(scoped); return t }
