package session

import (
	"io"
	"os"
	"slices"
	"sync"
)

// drainer keeps reading, and discarding, output FIFOs whose command has
// finished but whose write end is still held by a background child (`server
// &`). Closing them instead would kill such a child with SIGPIPE on its next
// write, and leaving them unread would block it once the pipe is full.
// Their number is bounded; past the bound the oldest is closed.
type drainer struct {
	max int

	mu     sync.Mutex
	files  []*os.File // oldest first
	closed bool
	wg     sync.WaitGroup
}

func newDrainer(max int) *drainer { return &drainer{max: max} }

// adopt takes ownership of fd, a non-blocking FIFO read end.
func (d *drainer) adopt(fd int) {
	// Non-blocking, so the runtime poller waits for it: no thread per FIFO.
	f := os.NewFile(uintptr(fd), "lingering output")
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		f.Close()
		return
	}
	if len(d.files) >= d.max {
		d.files[0].Close() // its goroutine sees the close and exits
		d.files = d.files[1:]
	}
	d.files = append(d.files, f)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		io.Copy(io.Discard, f) // until every writer is gone, or Close
		f.Close()
		d.mu.Lock()
		if i := slices.Index(d.files, f); i >= 0 {
			d.files = slices.Delete(d.files, i, i+1)
		}
		d.mu.Unlock()
	}()
}

// close closes every adopted FIFO and waits for the goroutines.
func (d *drainer) close() {
	d.mu.Lock()
	d.closed = true
	for _, f := range d.files {
		f.Close()
	}
	d.files = nil
	d.mu.Unlock()
	d.wg.Wait()
}
