package sse

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// TestReaderReadsEventsLongerThanItsBuffer: a data line many times the
// read buffer, between short events, decodes whole; one over
// MaxEventBytes is refused.
func TestReaderReadsEventsLongerThanItsBuffer(t *testing.T) {
	long := strings.Repeat("x", 5*readBufferSize+7)
	stream := "event: a\ndata: {\"n\":1}\n\n" +
		": keepalive\n\n" +
		"event: b\ndata: " + long + "\n\n" +
		"event: c\ndata: one\ndata: two\n\n"
	r := NewReader(strings.NewReader(stream))
	for _, want := range []Event{{"a", []byte(`{"n":1}`)}, {"b", []byte(long)}, {"c", []byte("one\ntwo")}} {
		ev, err := r.Next()
		if err != nil || ev.Name != want.Name || string(ev.Data) != string(want.Data) {
			t.Fatalf("Next = %q (%d bytes), %v; want %q (%d bytes)", ev.Name, len(ev.Data), err, want.Name, len(want.Data))
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}

	huge := "event: d\ndata: " + strings.Repeat("y", MaxEventBytes+1) + "\n\n"
	if _, err := NewReader(strings.NewReader(huge)).Next(); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("an event over MaxEventBytes: %v, want ErrEventTooLarge", err)
	}
}
