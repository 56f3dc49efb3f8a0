package sandbox

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

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

// Page calls each with the sandboxes that match q, in order of scoped ID,
// and reports whether sandboxes after the last one also match. Like List,
// it never waits for a busy sandbox, and it calls each with no lock held.
// The caller encodes each as it comes: a page gathered into a slice first
// allocated an Info (over 500 bytes) per sandbox for every page.
func (m *Manager) Page(ctx context.Context, q ListQuery, each func(Info)) (more bool) {
	after := q.After
	n := 0
	var onStack [pageBatch]*box // a page's batch allocates nothing
	for {
		// Boxes are taken from the index a batch at a time, so that the
		// manager's lock is held for a page's worth of IDs, not for all.
		want := listBatch
		if q.Limit > 0 {
			want = max(q.Limit+1-n, 1)
		}
		batch, end := m.boxesAfter(q, after, want, onStack[:0])
		for _, b := range batch {
			after = b.id
			inf, ok := m.peek(ctx, b)
			if !ok || !inf.matches(q) {
				continue
			}
			if q.Limit > 0 && n == q.Limit {
				return true
			}
			each(inf)
			n++
		}
		if end {
			return false
		}
	}
}

// listBatch is how many boxes a list without a limit takes at a time.
const listBatch = 256

// pageBatch is how many boxes Page holds without allocating: a page of up
// to pageBatch-1 sandboxes (and the one that says whether there are more).
const pageBatch = 32

// boxesAfter appends to out up to n boxes of q's tenant (or every
// tenant's) whose IDs sort after after, in ID order, skipping those whose
// status is not q's; end reports that the index has no more. A tenant's
// scoped IDs ("t/...") sort together, so its boxes are found without
// walking the others'.
func (m *Manager) boxesAfter(q ListQuery, after string, n int, out []*box) (_ []*box, end bool) {
	prefix := ""
	if !q.AllTenants && q.Tenant != "" {
		prefix = tenant.Scope(q.Tenant, "")
		after = max(after, prefix)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i, found := slices.BinarySearch(m.ids, after)
	if found {
		i++
	}
	for ; i < len(m.ids); i++ {
		id := m.ids[i]
		if prefix != "" && !strings.HasPrefix(id, prefix) {
			return out, true
		}
		if !q.AllTenants && tenant.Of(id) != q.Tenant {
			continue
		}
		b := m.boxes[id]
		if q.Status != "" {
			// A cheap first cut without the box's lock; matches checks.
			if st, ok := b.status.Load().(Status); ok && st != q.Status {
				continue
			}
		}
		if len(out) == n {
			return out, false
		}
		out = append(out, b)
	}
	return out, true
}

// addBoxLocked registers b in boxes and the sorted index. m.mu is held.
func (m *Manager) addBoxLocked(b *box) {
	if _, ok := m.boxes[b.id]; !ok {
		i, _ := slices.BinarySearch(m.ids, b.id)
		m.ids = slices.Insert(m.ids, i, b.id)
	}
	m.boxes[b.id] = b
}

// removeBoxLocked forgets id in boxes and the sorted index. m.mu is held.
func (m *Manager) removeBoxLocked(id string) {
	if _, ok := m.boxes[id]; !ok {
		return
	}
	delete(m.boxes, id)
	if i, found := slices.BinarySearch(m.ids, id); found {
		m.ids = slices.Delete(m.ids, i, i+1)
	}
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
