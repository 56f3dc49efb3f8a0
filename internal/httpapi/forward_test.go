package httpapi

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// chunked is an upstream that returns its chunks one Read at a time and
// then err.
type chunked struct {
	chunks []string
	err    error
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, c.err
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if c.chunks[0] == "" {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}
func (c *chunked) Close() error { return nil }

func TestStreamGuard(t *testing.T) {
	start := "event: start\ndata: {\"type\":\"start\"}\n\n"
	out := "event: stdout\ndata: {\"type\":\"stdout\",\"data\":\"hi\"}\n\n"
	done := "event: complete\ndata: {\"type\":\"complete\",\"exitCode\":0}\n\n"
	tests := []struct {
		name      string
		upstream  *chunked
		wantLost  bool
		wantParts []string
	}{
		{"complete stream passes unchanged", &chunked{chunks: []string{start, out, done}, err: io.EOF}, false, []string{start, out, done}},
		{"events split across reads", &chunked{chunks: []string{start[:5], start[5:] + out[:10], out[10:] + done}, err: io.EOF}, false, []string{start, out, done}},
		{"event boundary split across reads", &chunked{chunks: []string{start[:len(start)-1], "\n" + out[:len(out)-1], "\n" + done}, err: io.EOF}, false, []string{start, out, done}},
		{"cut after an event", &chunked{chunks: []string{start, out}, err: io.EOF}, true, []string{start, out}},
		{"cut inside an event", &chunked{chunks: []string{start, out[:12]}, err: errors.New("connection reset")}, true, []string{start}},
		{"coded error event is terminal", &chunked{chunks: []string{start, "event: error\ndata: {\"code\":\"COMMAND_TIMEOUT\"}\n\n"}, err: io.EOF}, false, []string{start}},
		{"an error event is terminal whatever it carries", &chunked{chunks: []string{start, "event: error\ndata: {}\n\n"}, err: io.EOF}, false, []string{start}},
		{"exit is terminal", &chunked{chunks: []string{start, "event: exit\ndata: {\"type\":\"exit\"}\n\n"}, err: io.EOF}, false, []string{start}},
		{"a program's exception is not terminal", &chunked{chunks: []string{start, "event: execution_error\ndata: {\"error\":{\"name\":\"ZeroDivisionError\"}}\n\n"}, err: io.EOF}, true, []string{start}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := io.ReadAll(&streamGuard{upstream: tt.upstream})
			if err != nil {
				t.Fatal(err)
			}
			got := string(data)
			for _, p := range tt.wantParts {
				if !strings.Contains(got, p) {
					t.Errorf("output lacks %q:\n%s", p, got)
				}
			}
			lost := strings.Contains(got, "SANDBOX_UNAVAILABLE")
			if lost != tt.wantLost {
				t.Errorf("lost-stream error event = %v, want %v:\n%s", lost, tt.wantLost, got)
			}
			if strings.Contains(got, out[:12]) && !strings.Contains(got, out) {
				t.Errorf("a partial event was passed on:\n%s", got)
			}
		})
	}
}

// repeating is an upstream that hands out the same event on every Read.
type repeating struct{ event []byte }

func (r *repeating) Read(p []byte) (int, error) { return copy(p, r.event), nil }
func (r *repeating) Close() error               { return nil }

// The guard reads into the caller's buffer and keeps one buffer of its
// own for a partial event: passing events on allocates nothing per read
// (it used to allocate 32 KiB for every read of every stream).
func TestStreamGuardReadsWithoutAllocating(t *testing.T) {
	g := &streamGuard{upstream: &repeating{[]byte("event: stdout\ndata: {\"type\":\"stdout\",\"data\":\"hi\"}\n\n")}}
	p := make([]byte, 32<<10)
	for range 3 { // let its buffer reach its size
		if _, err := g.Read(p); err != nil {
			t.Fatal(err)
		}
	}
	if allocs := testing.AllocsPerRun(1000, func() { g.Read(p) }); allocs != 0 {
		t.Errorf("%.1f allocations per read", allocs)
	}
}
