package pidguard

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// fakeCgroup writes a user cgroup's pids files below a fake root. No
// process is in it, so a recovery kills nothing.
func fakeCgroup(t *testing.T, root string, current, max, failures int) {
	t.Helper()
	dir := filepath.Join(root, "pids", "user")
	os.MkdirAll(dir, 0o755)
	for name, v := range map[string]string{
		"pids.current": fmt.Sprint(current), "pids.max": fmt.Sprint(max),
		"pids.events": fmt.Sprintf("max %d\n", failures), "cgroup.procs": "",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckActsOnlyWhenFullAndFailing(t *testing.T) {
	root := t.TempDir()
	fakeCgroup(t, root, 10, 48, 0)
	g := New(root, slog.New(slog.DiscardHandler))
	steps := []struct {
		current, failures int
		want              bool
	}{
		{10, 0, false},  // idle
		{48, 0, false},  // full, but nothing failed: a workload at its limit
		{20, 5, false},  // forks failed, but it is not full any more (for fullWindow)
		{47, 9, true},   // full and failing since the last check: a bomb
		{47, 9, false},  // no new failure since
		{44, 12, true},  // within 10% of the limit counts as full
		{43, 20, false}, // below that does not
	}
	for i, s := range steps {
		fakeCgroup(t, root, s.current, 48, s.failures)
		if got := g.Check(); got != s.want {
			t.Errorf("step %d (%d/48 tasks, %d failures): Check = %v, want %v", i, s.current, s.failures, got, s.want)
		}
	}
}

func TestCheckWithoutACgroupNeverActs(t *testing.T) {
	g := New(t.TempDir(), slog.New(slog.DiscardHandler))
	if g.Check() {
		t.Error("Check acted without a user cgroup")
	}
	var nilGuard *Guard
	if nilGuard.Check() {
		t.Error("a nil guard acted")
	}
}

func TestUnlimitedNeverActs(t *testing.T) {
	root := t.TempDir()
	fakeCgroup(t, root, 10, 48, 0)
	os.WriteFile(filepath.Join(root, "pids", "user", "pids.max"), []byte("max\n"), 0o644)
	os.WriteFile(filepath.Join(root, "pids", "user", "pids.events"), []byte("max 3\n"), 0o644)
	if New(root, slog.New(slog.DiscardHandler)).Check() {
		t.Error("Check acted on a cgroup without a pids limit")
	}
}
