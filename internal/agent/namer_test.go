package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/rename"
)

// A call that carries the name waits for a namer that said it waits, and
// only for one: what the namer says (written here as it would) decides.
func TestNamerLinkAwait(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before string // said before the call
		later  string // said while the call waits
		ok     bool
		waits  bool
	}{
		{name: "no namer", ok: true},
		{name: "named before the call", before: "ready\nok\n", ok: true},
		{name: "named while the call waits", before: "ready\n", later: "ok\n", ok: true, waits: true},
		{name: "naming failed", before: "ready\n", later: "error\n", waits: true},
		{name: "namer gone without naming", before: "ready\ngone\n", ok: true},
		{name: "namer never answers", before: "ready\n", waits: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := openNamerLink(dir)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, rename.TellFIFO)
			w, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			w.WriteString(tc.before)
			if tc.later != "" {
				go func() {
					time.Sleep(50 * time.Millisecond)
					w.WriteString(tc.later)
				}()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			start := time.Now()
			err = l.await(ctx)
			if (err == nil) != tc.ok {
				t.Errorf("await: %v, want ok=%v", err, tc.ok)
			}
			// What the namer says later comes 50 ms after the writer
			// started: a call that returned sooner did not wait for it.
			if took := time.Since(start); tc.waits && took < 40*time.Millisecond {
				t.Errorf("await returned after %v, before the namer said how it went", took)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Errorf("the FIFO is left after the naming: %v", err)
			}
		})
	}
}
