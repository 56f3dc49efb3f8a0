package agentlog

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriterKeepsTheFileUnderItsBound writes 40 times the bound, as a
// sandbox making its agent log a line per request would, and checks the
// file never passes the bound and still ends with the last lines.
func TestWriterKeepsTheFileUnderItsBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.log")
	os.WriteFile(path, []byte("written by the runtime before the agent started\n"), 0o600)
	// As the daemon opens it for the container.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const bound = 64 << 10
	w := New(f, bound)
	var last string
	for i := 0; i < 40*bound/100; i++ {
		last = fmt.Sprintf("level=WARN msg=\"session user unavailable\" n=%06d %s\n", i, strings.Repeat("x", 40))
		if _, err := w.Write([]byte(last)); err != nil {
			t.Fatal(err)
		}
		if i%97 == 0 {
			if fi, _ := os.Stat(path); fi.Size() > bound {
				t.Fatalf("after %d lines the log has %d bytes, over its bound %d", i, fi.Size(), bound)
			}
		}
	}
	data, _ := os.ReadFile(path)
	if len(data) > bound || !strings.HasSuffix(string(data), last) {
		t.Errorf("log of %d bytes (bound %d) ending %q, want it to end with the last line", len(data), bound, data[max(0, len(data)-200):])
	}
	if !strings.Contains(string(data), "log cut at") {
		t.Error("a cut log does not say so")
	}

	// One huge line is shortened, not written whole.
	if n, err := w.Write([]byte(strings.Repeat("y", 10*bound) + "\n")); err != nil || n != 10*bound+1 {
		t.Fatalf("Write of a huge line = %d, %v", n, err)
	}
	if fi, _ := os.Stat(path); fi.Size() > bound {
		t.Errorf("after a huge line the log has %d bytes", fi.Size())
	}
}
