package httpapi

import "testing"

// Large copy buffers go only to the routes that move file contents; event
// streams hold their buffer for as long as they last.
func TestBulkBuffersOnlyForFileContents(t *testing.T) {
	for rest, bulk := range map[string]bool{
		"files/raw": true, "files/archive": true,
		"files/watch": false, "files/read/stream": false, "exec/stream": false, "files/write": false,
	} {
		if got := bufferPoolFor(rest) != nil; got != bulk {
			t.Errorf("%s: bulk buffers %v, want %v", rest, got, bulk)
		}
	}
	if b := (bulkBuffers{}).Get(); len(b) != 256<<10 {
		t.Errorf("buffer of %d bytes", len(b))
	}
}
