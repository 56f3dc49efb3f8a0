package httpapi

import "testing"

// The bulk copy buffers are the size the file routes are tuned for, and
// come back from the pool whole.
func TestBulkBuffers(t *testing.T) {
	b := (bulkBuffers{}).Get()
	if len(b) != 256<<10 {
		t.Errorf("buffer of %d bytes", len(b))
	}
	(bulkBuffers{}).Put(b)
	if b := (bulkBuffers{}).Get(); len(b) != 256<<10 {
		t.Errorf("buffer of %d bytes after a Put", len(b))
	}
}
