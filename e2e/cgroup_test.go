package e2e

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestSandboxCannotMakeCgroups repeats the attack on the host's memory
// cgroup IDs: root user code tries to create thousands of sub-cgroups
// wherever a cgroup hierarchy is visible to it. Each memory cgroup takes
// one of the kernel's 65,535 host-wide IDs; none may be created, and the
// next sandbox must start.
func TestSandboxCannotMakeCgroups(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("cgbomb")
	if got := run(t, sb, "cat /proc/self/cgroup"); !inUserCgroup(got) {
		t.Fatalf("user code is not in the user cgroup:\n%s", got)
	}
	key := onlyKey(t, d)
	before := hostCgroups(key)
	memBefore := memoryCgroups(t)

	start := time.Now()
	out := run(t, sb, `python3 -c '
import glob, os
made = cgroups = 0
roots = glob.glob("/.sandboxd/cgroup/*") + ["/sys/fs/cgroup"] + glob.glob("/sys/fs/cgroup/*")
for root in roots:
    for i in range(3000):
        p = "%s/bomb%d" % (root, i)
        try:
            os.mkdir(p)
        except OSError:
            break
        made += 1
        if os.path.exists(p + "/cgroup.procs"):
            cgroups += 1
print(len(roots), made, cgroups)'`)
	t.Logf("inside: roots, directories made, cgroups made = %s (in %v)", trim(out), time.Since(start).Round(time.Millisecond))
	if f := strings.Fields(out); len(f) != 3 || f[0] == "0" || f[2] != "0" {
		t.Errorf("inside the sandbox: roots, directories, cgroups = %q, want no cgroup made", trim(out))
	}
	if after := hostCgroups(key); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("the sandbox's cgroups on the host changed:\nbefore:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	// Other tests create sandboxes meanwhile: a margin, far below 3,000.
	if memAfter := memoryCgroups(t); memAfter-memBefore > 500 {
		t.Errorf("host memory cgroups went from %d to %d", memBefore, memAfter)
	}
	if got := trim(run(t, d.Client.Sandbox("cgbomb-next"), "echo started")); got != "started" {
		t.Errorf("next sandbox: %q", got)
	}
	if got := trim(run(t, sb, "echo alive")); got != "alive" {
		t.Errorf("after the attempt: %q", got)
	}
	if m := metricsText(t, d); !strings.Contains(m, `sandboxd_host_cgroups{controller="memory"} `) {
		t.Errorf("/metrics lacks the host's memory cgroup count:\n%s", m)
	}
}

// inUserCgroup reports whether /proc/self/cgroup (as seen inside, through
// the cgroup namespace) puts the process in the user cgroup for memory and
// pids (v1), or in the unified hierarchy (v2).
func inUserCgroup(procSelfCgroup string) bool {
	found := map[string]bool{}
	for _, line := range strings.Split(trim(procSelfCgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[2] != "/user" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			found[c] = true
		}
		if parts[0] == "0" {
			return true
		}
	}
	return found["memory"] && found["pids"]
}

// hostCgroups lists every cgroup directory of the sandbox with key, in
// every hierarchy, relative to /sys/fs/cgroup.
func hostCgroups(key string) []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/sandboxd/" + key)
	more, _ := filepath.Glob("/sys/fs/cgroup/sandboxd/" + key)
	var out []string
	for _, root := range append(roots, more...) {
		filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				rel, _ := filepath.Rel("/sys/fs/cgroup", path)
				out = append(out, rel)
			}
			return nil
		})
	}
	return out
}

// memoryCgroups is the host's memory cgroup count, dying ones included.
func memoryCgroups(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/cgroups")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 4 && fields[0] == "memory" {
			n, _ := strconv.Atoi(fields[2])
			return n
		}
	}
	t.Fatal("no memory line in /proc/cgroups")
	return 0
}

func metricsText(t *testing.T, d *testdaemon.Daemon) string {
	t.Helper()
	req, _ := http.NewRequest("GET", d.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
