package sandbox

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/sandboxd/sandboxd/internal/bytesize"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// ErrQuota is a tenant's quota refusing a sandbox, or refusing to run it.
var ErrQuota = errors.New("quota exceeded")

// QuotaError names the quota that refused.
type QuotaError struct {
	Tenant string
	// Quota is "maxSandboxes", "maxRunning" or "maxMemory".
	Quota string
	Limit int64
	Used  int64
}

func (e *QuotaError) Error() string {
	if e.Quota == "maxMemory" {
		return fmt.Sprintf("quota maxMemory of tenant %s exceeded: its running sandboxes' memory limits add up to %s of %s",
			e.Tenant, bytesize.Format(e.Used), bytesize.Format(e.Limit))
	}
	return fmt.Sprintf("quota %s of tenant %s exceeded: %d of %d", e.Quota, e.Tenant, e.Used, e.Limit)
}

func (e *QuotaError) Unwrap() error { return ErrQuota }

// Usage is what one tenant holds.
type Usage struct {
	Sandboxes int
	Running   int
	// Memory is the sum of the memory limits of its running sandboxes.
	Memory int64
}

// quota is the quota of b's tenant.
func (m *Manager) quota(t string) tenant.Quota {
	if m.opts.Quotas == nil || t == "" {
		return tenant.Quota{}
	}
	return m.opts.Quotas(t)
}

// usageLocked counts what tenant t holds; m.mu is held. Boxes being
// created count, so concurrent creates cannot overshoot a quota.
func (m *Manager) usageLocked(t string) Usage {
	var u Usage
	for id, b := range m.boxes {
		if tenant.Of(id) != t {
			continue
		}
		u.Sandboxes++
		if b.up.Load() {
			u.Running++
			u.Memory += b.memory
		}
	}
	return u
}

// Usage returns what tenant t ("" for the admin namespace) holds.
func (m *Manager) Usage(t string) Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.usageLocked(t)
}

// usageByTenant is what every tenant holds ("" the admin namespace).
func (m *Manager) usageByTenant() map[string]Usage {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Usage{}
	for id, b := range m.boxes {
		t := tenant.Of(id)
		u := out[t]
		u.Sandboxes++
		if b.up.Load() {
			u.Running++
			u.Memory += b.memory
		}
		out[t] = u
	}
	return out
}

// checkCount refuses a new sandbox of b's tenant past its maxSandboxes
// (b's placeholder is in boxes already).
func (m *Manager) checkCount(b *box) error {
	t := tenant.Of(b.id)
	q := m.quota(t)
	if q.MaxSandboxes == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if u := m.usageLocked(t); u.Sandboxes > q.MaxSandboxes {
		return &QuotaError{Tenant: t, Quota: "maxSandboxes", Limit: int64(q.MaxSandboxes), Used: int64(u.Sandboxes - 1)}
	}
	return nil
}

// checkRunningLocked refuses to run b past its tenant's maxRunning or
// maxMemory; m.mu is held, and b is not counted as running yet.
func (m *Manager) checkRunningLocked(b *box) error {
	t := tenant.Of(b.id)
	q := m.quota(t)
	if q.MaxRunning == 0 && q.MaxMemory == 0 {
		return nil
	}
	u := m.usageLocked(t)
	if q.MaxRunning > 0 && u.Running+1 > q.MaxRunning {
		return &QuotaError{Tenant: t, Quota: "maxRunning", Limit: int64(q.MaxRunning), Used: int64(u.Running)}
	}
	if q.MaxMemory > 0 && u.Memory+b.memory > q.MaxMemory {
		return &QuotaError{Tenant: t, Quota: "maxMemory", Limit: q.MaxMemory, Used: u.Memory}
	}
	return nil
}

// mayTakeWarm reports whether b may be made from a warm sandbox: not when
// its tenant's running sandboxes are bounded, since a warm sandbox is
// already running and taking it would pass the bound unchecked.
func (m *Manager) mayTakeWarm(b *box) bool {
	q := m.quota(tenant.Of(b.id))
	return q.MaxRunning == 0 && q.MaxMemory == 0
}

// takeWarmFor is takeWarm for b, when b's tenant may have one.
func (m *Manager) takeWarmFor(b *box, cfg Config) *box {
	if !m.mayTakeWarm(b) {
		return nil
	}
	if cfg.Snapshot != "" {
		return m.takeForkWarm(cfg)
	}
	return m.takeWarm(cfg)
}

// ErrHostAccessForbidden: a tenant's sandbox names host addresses in
// allowHostCidrs that the operator has not opened to tenants.
var ErrHostAccessForbidden = errors.New("host access not allowed for tenants")

// checkHostAccess refuses allowHostCidrs entries of a tenant's sandbox id
// that are not inside the operator's Options.HostAccessAllow. An entry
// opens every port of the host's addresses it names: other tenants'
// services on the host and the daemon's own API among them, which on a
// host shared by tenants is the operator's decision, not a tenant's. The
// owner of the sandbox decides, not the caller: an admin acting as a
// tenant (Sandbox-Tenant, as the E2B layer does for a tenant's key) makes
// a sandbox whose code is the tenant's. The admin namespace's sandboxes
// may name any host address. n's CIDRs are canonical (resolveNetwork).
func (m *Manager) checkHostAccess(id string, n NetworkConfig) error {
	if tenant.Of(id) == "" {
		return nil
	}
	for i, s := range n.AllowHostCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return policyErr(fmt.Sprintf("allowHostCidrs[%d]", i), s, "%v", err)
		}
		if !insideAny(p, m.opts.HostAccessAllow) {
			return fmt.Errorf("%w: allowHostCidrs[%d] %s opens host addresses the operator has not opened to tenants (sandboxd --host-access-allow)",
				ErrHostAccessForbidden, i, s)
		}
	}
	return nil
}

// insideAny reports whether p lies wholly inside one of allow.
func insideAny(p netip.Prefix, allow []netip.Prefix) bool {
	for _, a := range allow {
		if a.Addr().Is4() == p.Addr().Is4() && a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
