package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// A paused gVisor sandbox restores with its cgroup's CPU limit lifted
// (internal/sandbox/resumecpu.go); these check that the limit is back.

// pausedKey waits until the paused sandbox id's container is created ahead
// of its resume (the pause's work in the background), so that the next
// call restores into it, and returns its key (the one sandbox holding a
// checkpoint).
func pausedKey(t *testing.T, d *testdaemon.Daemon, id string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(d.Logs(), `msg="paused sandbox settled" sandbox=`+id) {
		if time.Now().After(deadline) {
			t.Fatalf("the pause of %s did not settle", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dirs, _ := filepath.Glob(filepath.Join(d.StateDir, "sandboxes", "*", "memory"))
	if len(dirs) != 1 {
		t.Fatalf("checkpoints while %s is paused: %v", id, dirs)
	}
	return filepath.Base(filepath.Dir(dirs[0]))
}

// cpuLimit is the sandbox with key's CPU limit on the host: its cgroups'
// quota and cpuset files, path: content.
func cpuLimit(t *testing.T, key string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, rel := range hostCgroups(key) {
		if filepath.Base(rel) != key {
			continue // a sub-cgroup
		}
		for _, f := range []string{"cpu.cfs_quota_us", "cpu.max", "cpuset.cpus"} {
			path := filepath.Join("/sys/fs/cgroup", rel, f)
			if data, err := os.ReadFile(path); err == nil {
				out[path] = strings.TrimSpace(string(data))
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no CPU limit files for the sandbox %s", key)
	}
	return out
}

// checkCPULimitBack: after the resume, the limit is what it was while
// paused (the sandbox's own), never the wider one of the restore.
func checkCPULimitBack(t *testing.T, d *testdaemon.Daemon, id, key string, paused map[string]string) {
	t.Helper()
	if !strings.Contains(d.Logs(), `msg="sandbox boot" sandbox=`+id+` prepared=true`) {
		t.Errorf("%s was not restored into its container created ahead (where its CPU limit is lifted)", id)
	}
	after := cpuLimit(t, key)
	for path, want := range paused {
		if got := after[path]; got != want {
			t.Errorf("CPU limit after the resume: %s = %q, want %q as before it", path, got, want)
		}
		if strings.HasSuffix(path, "quota_us") && want == "-1" || strings.HasSuffix(path, "cpu.max") && strings.HasPrefix(want, "max") {
			t.Errorf("the paused sandbox has no CPU quota: %s = %q", path, want)
		}
	}
}
