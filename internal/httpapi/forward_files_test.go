package httpapi

import (
	"testing"

	"github.com/sandboxd/sandboxd/internal/copybuf"
)

// The copy buffers are the sizes the routes are tuned for, and come back
// from their pools whole.
func TestCopyBuffers(t *testing.T) {
	for _, c := range []struct {
		name    string
		buffers copybuf.Pool
		size    int
	}{{"call", callBuffers, 32 << 10}, {"bulk", bulkBuffers, 256 << 10}} {
		b := c.buffers.Get()
		if len(b) != c.size {
			t.Errorf("%s: buffer of %d bytes", c.name, len(b))
		}
		c.buffers.Put(b)
		if b := c.buffers.Get(); len(b) != c.size {
			t.Errorf("%s: buffer of %d bytes after a Put", c.name, len(b))
		}
	}
}
