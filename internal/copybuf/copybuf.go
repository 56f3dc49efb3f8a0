// Package copybuf lends the daemon's reverse proxies (the API's calls to
// agents, the preview proxy, the E2B layer's host proxy, the cluster
// gateway) their copy buffers from pools. Without one,
// httputil.ReverseProxy makes a fresh 32 KiB buffer for every response:
// most of what a proxied call allocates, which a daemon with a large
// heap (2,000 sandboxes) pays for in cold memory and garbage collection
// on every call (bench/results/scale.txt). It holds no data between
// uses and must never hand one buffer to two holders.
package copybuf

import (
	"runtime/metrics"
	"sync"
)

// Pool is an httputil.BufferPool of buffers of one size. It holds
// *[]byte: a pointer fits an interface without an allocation, a slice
// header does not.
type Pool struct {
	size int
	pool *sync.Pool
}

// New returns a pool of buffers of size bytes.
func New(size int) Pool {
	return Pool{size: size, pool: &sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

// Get lends a buffer.
func (p Pool) Get() []byte { return *p.pool.Get().(*[]byte) }

// Put gives a buffer back. One of another size (not from this pool) is
// dropped.
func (p Pool) Put(b []byte) {
	if cap(b) == p.size {
		b = b[:p.size]
		p.pool.Put(&b)
	}
}

// Default is the pool of 32 KiB buffers, the size httputil.ReverseProxy
// and io.Copy use by themselves: for responses of any kind, event streams
// among them (a buffer is held for as long as its response lasts).
var Default = New(32 << 10)

// LargeAllocations counts the heap allocations of 28 KiB or more made by
// the process so far (runtime/metrics; a count brought up to date at the
// last garbage collection, so call runtime.GC first): for tests that show
// a path borrows its copy buffer rather than making one (not under the
// race detector: see RaceDetector).
func LargeAllocations() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs-by-size:bytes"}}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	var n uint64
	for i, c := range h.Counts {
		if h.Buckets[i] >= 28<<10 {
			n += c
		}
	}
	return n
}
