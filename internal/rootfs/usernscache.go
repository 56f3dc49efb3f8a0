package rootfs

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// UserNSCache keeps the user namespace of each host ID range open once it
// has been opened, and opens ranges asked for ahead of need, so that a
// sandbox's start finds its range's namespace ready instead of starting a
// process for it. Opening one forks the daemon (a process in a new user
// namespace cannot be a vfork: its parent writes its ID maps while it
// waits), and on a 2-CPU host the fork and the copy-on-write faults it
// causes in every daemon thread cost the start about 10 ms; reusing the
// namespace costs a dup(2).
//
// A cached namespace is only an ID map: no process runs in it, and the
// idmapped mounts made with it (read-only image layers) map exactly what
// a fresh namespace of the same range would. Ranges are reused
// lowest-first by the manager, so the cache holds about as many
// namespaces as the most sandboxes that ran at once; past max it opens
// without keeping.
type UserNSCache struct {
	max int
	// wg counts opens in flight, which Close waits for.
	wg sync.WaitGroup

	mu     sync.Mutex
	open   map[uint32]*PendingUserNS
	closed bool
}

// NewUserNSCache returns a cache that keeps at most max namespaces.
func NewUserNSCache(max int) *UserNSCache {
	return &UserNSCache{max: max, open: map[uint32]*PendingUserNS{}}
}

// entry returns r's namespace, starting to open it if it is not kept yet;
// nil when the cache is closed or full.
func (c *UserNSCache) entry(r IDRange) *PendingUserNS {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if p, ok := c.open[r.Base]; ok {
		return p
	}
	if len(c.open) >= c.max {
		return nil
	}
	p := &PendingUserNS{done: make(chan struct{})}
	c.open[r.Base] = p
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.f, p.err = r.OpenUserNS()
		close(p.done)
		if p.err != nil {
			c.forget(r.Base, p) // the next start tries again
		}
	}()
	return p
}

func (c *UserNSCache) forget(base uint32, p *PendingUserNS) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[base] == p {
		delete(c.open, base)
	}
}

// Prefetch starts opening r's namespace in the background, unless it is
// kept already.
func (c *UserNSCache) Prefetch(r IDRange) {
	if r.Valid() {
		c.entry(r)
	}
}

// Open returns r's namespace as a PendingUserNS of the caller's own (a
// duplicate of the kept descriptor), which the caller must Close.
func (c *UserNSCache) Open(r IDRange) *PendingUserNS {
	if !r.Valid() {
		return r.OpenUserNSAsync() // reports the invalid range
	}
	kept := c.entry(r)
	if kept == nil {
		return r.OpenUserNSAsync()
	}
	select {
	case <-kept.done: // the usual case: opened ahead
		p := &PendingUserNS{done: make(chan struct{})}
		p.f, p.err = c.dup(r, kept)
		close(p.done)
		return p
	default:
	}
	p := &PendingUserNS{done: make(chan struct{})}
	go func() { // ends when the open in flight does
		<-kept.done
		p.f, p.err = c.dup(r, kept)
		close(p.done)
	}()
	return p
}

// dup returns a descriptor of kept, r's namespace, that stays valid after
// the cache closes its own (once closed, a new namespace of r's).
func (c *UserNSCache) dup(r IDRange, kept *PendingUserNS) (*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if kept.err != nil {
		return nil, kept.err
	}
	if c.closed {
		return r.OpenUserNS()
	}
	fd, err := unix.FcntlInt(kept.f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating a user namespace descriptor: %w", err)
	}
	return os.NewFile(uintptr(fd), kept.f.Name()), nil
}

// Len is how many namespaces are kept or being opened.
func (c *UserNSCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// Close waits for opens in flight and closes every kept namespace;
// descriptors handed out stay valid.
func (c *UserNSCache) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for base, p := range c.open {
		if p.f != nil {
			p.f.Close()
		}
		delete(c.open, base)
	}
}
