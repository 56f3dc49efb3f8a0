package e2b

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// entry is what the E2B layer keeps about a sandbox created through it,
// beyond what sandboxd keeps itself: the E2B lifecycle (a deadline after
// which it is killed or paused), the template it was asked for, and
// whether its ports are public.
type entry struct {
	ID string `json:"id"`
	// Tenant owns the sandbox ("" the admin namespace): its sandboxd ID
	// is ID in that tenant's namespace.
	Tenant     string    `json:"tenant,omitempty"`
	TemplateID string    `json:"templateId"`
	StartedAt  time.Time `json:"startedAt"`
	// EndAt is when the sandbox is killed, or paused with AutoPause.
	EndAt     time.Time `json:"endAt"`
	AutoPause bool      `json:"autoPause,omitempty"`
	// AutoPauseNoMemory: the timeout's pause keeps files only.
	AutoPauseNoMemory bool `json:"autoPauseNoMemory,omitempty"`
	// Paused is set while the sandbox is paused by this layer (stopped);
	// its deadline does not run then.
	Paused bool `json:"paused,omitempty"`
	// PrivateTraffic: getHost addresses need the traffic access token.
	PrivateTraffic bool `json:"privateTraffic,omitempty"`
	// AllowInternet is false when the sandbox was created offline.
	NoInternet bool `json:"noInternet,omitempty"`
}

// table holds the entries, persisted as one JSON file (written whole,
// temp file and rename) so deadlines survive a daemon restart.
type table struct {
	path string
	key  []byte

	mu      sync.Mutex
	entries map[string]*entry
}

func openTable(dir string) (*table, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := loadKey(filepath.Join(dir, "key"))
	if err != nil {
		return nil, err
	}
	t := &table{path: filepath.Join(dir, "sandboxes.json"), key: key, entries: map[string]*entry{}}
	data, err := os.ReadFile(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, err
	}
	var list []*entry
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("reading %s: %w", t.path, err)
	}
	for _, e := range list {
		t.entries[e.ID] = e
	}
	return t, nil
}

// loadKey returns the layer's secret (for access tokens), creating it.
func loadKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err == nil && len(data) == 32 {
		return data, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

// token derives a per-sandbox secret of the given kind ("envd" for the
// envd access token, "traffic" for getHost's): stable across restarts
// without being stored, and unrelated between sandboxes.
func (t *table) token(kind, id string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(kind + "\x00" + id))
	return hex.EncodeToString(m.Sum(nil))[:40]
}

func (t *table) get(id string) (entry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[id]
	if !ok {
		return entry{}, false
	}
	return *e, true
}

// update changes (or with add, creates) an entry and persists the table.
func (t *table) update(id string, add bool, f func(*entry)) (entry, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[id]
	if !ok {
		if !add {
			return entry{}, false, nil
		}
		e = &entry{ID: id}
		t.entries[id] = e
	}
	f(e)
	return *e, true, t.saveLocked()
}

func (t *table) remove(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.entries[id]; !ok {
		return nil
	}
	delete(t.entries, id)
	return t.saveLocked()
}

// list returns the entries by start time (then ID).
func (t *table) list() []entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]entry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// expired returns the running entries whose deadline has passed.
func (t *table) expired(now time.Time) []entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []entry
	for _, e := range t.entries {
		if !e.Paused && !e.EndAt.IsZero() && !now.Before(e.EndAt) {
			out = append(out, *e)
		}
	}
	return out
}

func (t *table) saveLocked() error {
	list := make([]*entry, 0, len(t.entries))
	for _, e := range t.entries {
		list = append(list, e)
	}
	data, err := json.Marshal(list)
	if err != nil {
		return err
	}
	tmp := t.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, t.path)
}
