package copybuf

import (
	"runtime"
	"testing"
)

var sink []byte

func TestPoolLendsWholeBuffersAndLargeAllocationsCountsThem(t *testing.T) {
	p := New(64 << 10)
	b := p.Get()
	if len(b) != 64<<10 {
		t.Fatalf("a buffer of %d bytes", len(b))
	}
	p.Put(b[:10])
	p.Put(make([]byte, 10)) // not the pool's: dropped
	if b := p.Get(); len(b) != 64<<10 {
		t.Fatalf("a buffer of %d bytes after a Put", len(b))
	}
	runtime.GC()
	before := LargeAllocations()
	for range 10 {
		sink = make([]byte, 32<<10)
	}
	runtime.GC()
	if n := LargeAllocations() - before; n < 10 {
		t.Errorf("10 allocations of 32 KiB counted as %d", n)
	}
}
