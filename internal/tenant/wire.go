package tenant

import "github.com/sandboxd/sandboxd/api"

// Bounds of a quota field: far above any host, low enough that sums of
// them cannot overflow.
const (
	maxQuotaCount  = 1 << 20
	maxQuotaMemory = 1 << 50
)

// QuotaOfRequest checks a key create request's quotas, the one check of
// them for a node's and a gateway's POST /v1/keys, and returns them as the
// key store takes them; an admin key has none.
func QuotaOfRequest(req api.KeyCreateRequest) (Quota, *api.Error) {
	q := req.Quotas
	for _, f := range []struct {
		name string
		v    int64
		max  int64
	}{{"maxSandboxes", int64(q.MaxSandboxes), maxQuotaCount}, {"maxRunning", int64(q.MaxRunning), maxQuotaCount},
		{"maxMemory", q.MaxMemory, maxQuotaMemory}} {
		if f.v < 0 || f.v > f.max {
			return Quota{}, api.Errorf(api.CodeValidationFailed, "quotas.%s is %d; want 0 (unlimited) to %d", f.name, f.v, f.max)
		}
	}
	if req.Admin && q != (api.Quotas{}) {
		return Quota{}, api.Errorf(api.CodeValidationFailed, "an admin key has no quotas")
	}
	return Quota{MaxSandboxes: q.MaxSandboxes, MaxRunning: q.MaxRunning, MaxMemory: q.MaxMemory}, nil
}

// Wire is q as the API shows it.
func (q Quota) Wire() api.Quotas {
	return api.Quotas{MaxSandboxes: q.MaxSandboxes, MaxRunning: q.MaxRunning, MaxMemory: q.MaxMemory}
}

// Wire is k as GET /v1/keys lists it, without its usage (the caller's to
// count).
func (k Key) Wire() api.Key {
	return api.Key{Name: k.Name, Admin: k.Admin, Quotas: k.Quota.Wire(), CreatedAt: k.CreatedAt, RotatedAt: k.RotatedAt}
}

// Created is the answer to a create or rotate of k, whose secret is shown
// this once.
func (k Key) Created(secret string) api.KeyCreated {
	return api.KeyCreated{Name: k.Name, Key: secret, Quotas: k.Quota.Wire(), Admin: k.Admin}
}
