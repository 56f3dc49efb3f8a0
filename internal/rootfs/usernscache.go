package rootfs

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// UserNSCache holds user namespaces of host ID ranges opened ahead of
// need, so that a sandbox's start finds its range's namespace ready
// instead of starting processes for it (OpenUserNS: on a 2-CPU host
// about 10 ms of a start's network step).
//
// A kept namespace is only an ID map: no process has been in it. The
// idmapped mounts made with it (read-only image layers, a backup's image)
// map exactly what a fresh namespace of the same range would, so Open
// hands out a descriptor of it and keeps it. A start Takes it instead:
// the sandbox's runtime joins it, and once a sandbox's processes have
// been in a namespace it is never handed out again (it keeps what they
// left in it, such as their keyrings, for as long as it lives). Ranges
// are reused lowest-first by the manager, which has the one a start or a
// stop makes likely opened ahead (Prefetch); past max the cache opens
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
// duplicate of the kept descriptor), which the caller must Close. Only
// for ID maps: the namespace stays kept, and no process may join it.
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

// Take returns r's namespace for a sandbox's runtime to join, which the
// caller must Close: the one kept or being opened, which the cache no
// longer keeps, or else one opened now.
func (c *UserNSCache) Take(r IDRange) *PendingUserNS {
	c.mu.Lock()
	p, ok := c.open[r.Base]
	delete(c.open, r.Base)
	c.mu.Unlock()
	if ok {
		return p
	}
	return r.OpenUserNSAsync()
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

// Len is how many namespaces are kept or being opened (and not taken).
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
