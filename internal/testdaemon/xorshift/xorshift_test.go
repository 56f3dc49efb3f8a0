package xorshift

import (
	"bytes"
	"io"
	"testing"
)

// The stream does not depend on how it is read: a download read in any
// pieces is checked against the same bytes.
func TestStreamIsTheSameReadInAnyPieces(t *testing.T) {
	whole := make([]byte, 1<<20)
	New().Read(whole)
	var pieces bytes.Buffer
	s := New()
	for _, n := range []int{1, 7, 4096, 65536, 3, 1 << 19} {
		io.CopyN(&pieces, s, int64(n))
	}
	io.CopyN(&pieces, s, int64(len(whole)-pieces.Len()))
	if !bytes.Equal(pieces.Bytes(), whole) {
		t.Fatal("the stream read in pieces differs from the stream read whole")
	}
	// No short period: the first 4 KiB do not come back within 1 MiB.
	if i := bytes.Index(whole[1:], whole[:4096]); i >= 0 {
		t.Errorf("the stream's first 4 KiB come back at %d", i+1)
	}
}
