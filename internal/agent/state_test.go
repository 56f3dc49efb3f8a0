package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent/process"
)

// TestStateLoadTakesTheLaterWrite: a process start's unsynced write wins
// over an older synced one, a torn one is ignored, and a later synced
// write wins over it.
func TestStateLoadTakesTheLaterWrite(t *testing.T) {
	dir := t.TempDir()
	id := "a"
	snap := func() persisted { return persisted{Processes: []process.Info{{ID: id}}} }
	st, err := newStateStore(dir, snap)
	if err != nil {
		t.Fatal(err)
	}
	loaded := func() string {
		t.Helper()
		fresh, err := newStateStore(dir, snap)
		if err != nil {
			t.Fatal(err)
		}
		p, err := fresh.load()
		if err != nil || len(p.Processes) != 1 {
			t.Fatalf("load: %+v %v", p, err)
		}
		return p.Processes[0].ID
	}
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	id = "b"
	if err := st.saveFast(); err != nil {
		t.Fatal(err)
	}
	if got := loaded(); got != "b" {
		t.Errorf("after a fast write: %q, want b", got)
	}
	fast, _ := os.ReadFile(filepath.Join(dir, fastFile))
	os.WriteFile(filepath.Join(dir, fastFile), fast[:len(fast)/2], 0o600)
	if got := loaded(); got != "a" {
		t.Errorf("with a torn fast file: %q, want the synced a", got)
	}
	os.WriteFile(filepath.Join(dir, fastFile), fast, 0o600)
	id = "c"
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	if got := loaded(); got != "c" {
		t.Errorf("after a later synced write: %q, want c", got)
	}
}
