package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/agent/process"
)

// TestStateLoadTakesTheLaterWrite: a process start's unsynced record is
// added to an older synced state, a torn one is ignored, a later synced
// write takes it in and removes it, and an older agent's unsynced
// companion still wins over an older synced state.
func TestStateLoadTakesTheLaterWrite(t *testing.T) {
	dir := t.TempDir()
	ids := []string{"a"}
	snap := func() persisted {
		var p persisted
		for _, id := range ids {
			p.Processes = append(p.Processes, process.Info{ID: id, Status: process.Completed})
		}
		return p
	}
	st, err := newStateStore(dir, snap)
	if err != nil {
		t.Fatal(err)
	}
	loaded := func() []string {
		t.Helper()
		fresh, err := newStateStore(dir, snap)
		if err != nil {
			t.Fatal(err)
		}
		p, err := fresh.load()
		if err != nil {
			t.Fatalf("load: %v", err)
		}
		var got []string
		for _, info := range p.Processes {
			got = append(got, info.ID+":"+string(info.Status))
		}
		return got
	}
	startRecords := func() []string {
		t.Helper()
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), startPrefix) {
				names = append(names, e.Name())
			}
		}
		return names
	}
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	// b starts: its record alone, after the synced a.
	ids = append(ids, "b")
	if err := st.saveStart(process.Info{ID: "b", Status: process.Starting}); err != nil {
		t.Fatal(err)
	}
	if got, want := loaded(), []string{"a:completed", "b:starting"}; !slices.Equal(got, want) {
		t.Errorf("after a start's record: %q, want %q", got, want)
	}
	// c's record is torn: ignored.
	if err := st.saveStart(process.Info{ID: "c", Status: process.Starting}); err != nil {
		t.Fatal(err)
	}
	names := startRecords()
	if len(names) != 2 {
		t.Fatalf("start records %q, want 2", names)
	}
	torn := filepath.Join(dir, names[1])
	whole, _ := os.ReadFile(torn)
	os.WriteFile(torn, whole[:len(whole)/2], 0o600)
	if got, want := loaded(), []string{"a:completed", "b:starting"}; !slices.Equal(got, want) {
		t.Errorf("with a torn start record: %q, want %q", got, want)
	}
	// A synced save takes b in (now completed) and removes the records.
	if err := st.save(); err != nil {
		t.Fatal(err)
	}
	if got, want := loaded(), []string{"a:completed", "b:completed"}; !slices.Equal(got, want) {
		t.Errorf("after a later synced write: %q, want %q", got, want)
	}
	if names := startRecords(); len(names) != 0 {
		t.Errorf("start records %q left after the synced save", names)
	}
	// A start record of an ID the state file has (a process of a reused
	// ID) replaces its record.
	if err := st.saveStart(process.Info{ID: "a", Status: process.Starting}); err != nil {
		t.Fatal(err)
	}
	if got, want := loaded(), []string{"b:completed", "a:starting"}; !slices.Equal(got, want) {
		t.Errorf("after a start of a reused ID: %q, want %q", got, want)
	}
	// An older agent's unsynced companion, later than the state file.
	ids = []string{"d"}
	st2, _ := newStateStore(dir, snap)
	st2.load()
	if err := st2.save(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, legacyFastFile), []byte(`{"version":1,"seq":1000,"processes":[{"id":"e","status":"running"}]}`), 0o600)
	if got, want := loaded(), []string{"e:running"}; !slices.Equal(got, want) {
		t.Errorf("with an older agent's later companion: %q, want %q", got, want)
	}
	st3, _ := newStateStore(dir, snap)
	st3.load()
	if err := st3.save(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, legacyFastFile)); !os.IsNotExist(err) {
		t.Errorf("the companion is still there after a save: %v", err)
	}
	if got, want := loaded(), []string{"d:completed"}; !slices.Equal(got, want) {
		t.Errorf("after the save: %q, want %q", got, want)
	}
}
