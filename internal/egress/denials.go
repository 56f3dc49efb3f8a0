package egress

import (
	"slices"
	"sync"
	"time"
)

// lastDenied is how many denied names a sandbox's summary keeps.
const lastDenied = 16

// Denial is one refused name.
type Denial struct {
	Name string
	// Reason is "dns" (the forwarder answered NXDOMAIN) or "sni"/"host"
	// (the checker refused a connection naming it).
	Reason string
	At     time.Time
}

// Denials counts what each sandbox's policy refused, by sandbox key, and
// keeps the last names. It is safe for concurrent use.
type Denials struct {
	mu   sync.Mutex
	byID map[string]*denials
}

type denials struct {
	count int64
	last  []Denial // newest last
}

// NewDenials returns an empty record.
func NewDenials() *Denials { return &Denials{byID: map[string]*denials{}} }

// Add records a denial for key.
func (d *Denials) Add(key string, dn Denial) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.byID[key]
	if s == nil {
		s = &denials{}
		d.byID[key] = s
	}
	s.count++
	s.last = append(s.last, dn)
	if len(s.last) > lastDenied {
		s.last = slices.Delete(s.last, 0, len(s.last)-lastDenied)
	}
}

// Get returns key's count and last denials, newest first.
func (d *Denials) Get(key string) (int64, []Denial) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.byID[key]
	if s == nil {
		return 0, nil
	}
	out := slices.Clone(s.last)
	slices.Reverse(out)
	return s.count, out
}

// Counts returns every key's count.
func (d *Denials) Counts() map[string]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]int64, len(d.byID))
	for k, s := range d.byID {
		out[k] = s.count
	}
	return out
}

// Forget drops key's record (its sandbox is gone).
func (d *Denials) Forget(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.byID, key)
}
