package sandbox

import (
	"context"
	"encoding/json"
	"sort"

	"github.com/sandboxd/sandboxd/internal/tenant"
)

// ListQuery selects a page of sandboxes.
type ListQuery struct {
	// Tenant is the tenant whose sandboxes are listed ("" is the admin
	// namespace), unless AllTenants.
	Tenant     string
	AllTenants bool
	// Labels must all be present with these values.
	Labels map[string]string
	// Status, when set, is the one status listed.
	Status Status
	// After lists only IDs (scoped) that sort after it: the last ID of the
	// previous page.
	After string
	// Limit is the most sandboxes returned; 0 is all.
	Limit int
}

// Page lists sandboxes that match q, ordered by scoped ID; more reports
// whether sandboxes after the last one returned also match. Like List, it
// never waits for a busy sandbox.
func (m *Manager) Page(ctx context.Context, q ListQuery) (out []Info, more bool) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.boxes))
	for id := range m.boxes {
		if (q.AllTenants || tenant.Of(id) == q.Tenant) && id > q.After {
			ids = append(ids, id)
		}
	}
	boxes := make(map[string]*box, len(ids))
	for _, id := range ids {
		boxes[id] = m.boxes[id]
	}
	m.mu.Unlock()
	sort.Strings(ids)
	for _, id := range ids {
		b := boxes[id]
		if q.Status != "" {
			// A cheap first cut without the box's lock; matches checks.
			if st, ok := b.status.Load().(Status); ok && st != q.Status {
				continue
			}
		}
		inf, ok := m.peek(ctx, b)
		if !ok || !inf.matches(q) {
			continue
		}
		if q.Limit > 0 && len(out) == q.Limit {
			return out, true
		}
		out = append(out, inf)
	}
	return out, false
}

// peek returns b's info without waiting for its lock: a busy sandbox is
// reported from the registry.
func (m *Manager) peek(ctx context.Context, b *box) (Info, bool) {
	if !b.mu.TryLock() {
		rec, err := m.opts.Store.Get(ctx, b.id)
		if err != nil {
			return Info{}, false
		}
		var cfg Config
		json.Unmarshal(rec.Config, &cfg)
		tmp := &box{id: b.id, rec: rec, cfg: cfg}
		tmp.lastUsed.Store(b.lastUsed.Load())
		return tmp.info(), true
	}
	defer b.mu.Unlock()
	if b.rec.ID == "" || b.destroyed {
		return Info{}, false
	}
	return b.info(), true
}

func (inf Info) matches(q ListQuery) bool {
	if q.Status != "" && inf.Status != q.Status {
		return false
	}
	for k, v := range q.Labels {
		if got, ok := inf.Config.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
