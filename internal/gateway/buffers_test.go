package gateway_test

import (
	"runtime"
	"testing"

	"github.com/sandboxd/sandboxd/internal/copybuf"
)

// TestForwardBorrowsItsCopyBuffer: a forwarded answer's copy buffer comes
// from the daemon's pool, not a fresh 32 KiB per response.
func TestForwardBorrowsItsCopyBuffer(t *testing.T) {
	if copybuf.RaceDetector {
		t.Skip("the race detector's sync.Pool drops a quarter of the buffers given back: allocations say nothing of borrowing")
	}
	c := newCluster(t, "n1")
	gw := c.gateway(t)
	call(t, "PUT", gw.URL+"/v1/sandboxes/s1", "{}")
	const calls = 50
	runtime.GC()
	before := copybuf.LargeAllocations()
	for range calls {
		if resp, _ := call(t, "GET", gw.URL+"/v1/sandboxes/s1", ""); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	runtime.GC()
	if n := copybuf.LargeAllocations() - before; n > calls/5 {
		t.Errorf("%d forwarded answers made %d allocations of 28 KiB or more, want about none", calls, n)
	}
}
