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

	"github.com/sandboxd/sandboxd/client"
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
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/*/" + key)
	more, _ := filepath.Glob("/sys/fs/cgroup/*/" + key)
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

// TestDestroyAndRestartWithNestedCgroups: sub-cgroups below the user
// cgroup, several levels deep and with processes in them (what a tenant
// could make before the user cgroup stopped being mounted, and what a
// sandbox started by an older daemon may still hold), must not make
// restart or destroy fail: every process is killed and the tree removed
// deepest first.
func TestDestroyAndRestartWithNestedCgroups(t *testing.T) {
	d := daemon(t)
	before := hostState(t, d)
	sb := d.Client.Sandbox("nested")
	run(t, sb, "echo kept > /workspace/f")
	key := onlyKey(t, d)
	nest := func() {
		t.Helper()
		mustStart(t, sb, "sleep 1000")
		mustStart(t, sb, "sleep 1000")
		users, _ := filepath.Glob("/sys/fs/cgroup/*/*/" + key + "/user")
		if len(users) == 0 {
			t.Fatal("no user cgroup on the host")
		}
		for _, user := range users {
			procs, err := os.ReadFile(filepath.Join(user, "cgroup.procs"))
			if err != nil {
				t.Fatal(err)
			}
			pids := strings.Fields(string(procs))
			for i, sub := range []string{"a/b/c", "x/y/z/w"} {
				dir := filepath.Join(user, sub)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if i < len(pids) {
					if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pids[len(pids)-1-i]), 0); err != nil {
						t.Fatalf("moving %s into %s: %v", pids[len(pids)-1-i], dir, err)
					}
				}
			}
		}
	}
	nest()
	if _, err := sb.Restart(ctxT(t, 60*time.Second)); err != nil {
		t.Fatalf("restart with nested cgroups: %v", err)
	}
	if got := trim(run(t, sb, "cat /workspace/f; pgrep -c sleep || true")); got != "kept\n0" {
		t.Errorf("after restart: %q, want the file kept and no old process", got)
	}
	for _, dir := range hostCgroups(key) {
		if strings.Contains(dir, "/user/") {
			t.Errorf("a sub-cgroup survived the restart: %s", dir)
		}
	}
	nest()
	if err := sb.Destroy(ctxT(t, 60*time.Second)); err != nil {
		t.Fatalf("destroy with nested cgroups: %v", err)
	}
	if after := hostState(t, d); after != before {
		t.Errorf("host state after destroy differs from before create:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestSpawnWrapperCannotBeReplaced: root user code tries to put a program
// of its own where the agent's spawn wrapper is mounted (/.sandboxd/spawn):
// writing over it, moving the directory that holds it aside and planting
// one, binding one over it. A session started afterwards must still run in
// the user cgroup, and the planted program must never have run (the agent
// executes the wrapper through the descriptor it opened at start).
func TestSpawnWrapperCannotBeReplaced(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 120*time.Second)
	sb := d.Client.Sandbox("spawn-swap")
	if got := trim(run(t, sb, "grep -c ' /.sandboxd/spawn ' /proc/self/mountinfo")); got != "1" {
		t.Fatalf("the spawn wrapper's binary is not mounted at /.sandboxd/spawn: %q", got)
	}
	run(t, sb, `printf '#!/bin/sh\ntouch /tmp/replaced\nexec "$@"\n' > /tmp/evil; chmod +x /tmp/evil
cat /tmp/evil > /.sandboxd/spawn 2>/dev/null
mount --bind /tmp/evil /.sandboxd/spawn 2>/dev/null
if mv /.sandboxd /.sandboxd-aside 2>/dev/null; then mkdir -p /.sandboxd && cp /tmp/evil /.sandboxd/spawn; fi
true`)
	s, err := sb.CreateSession(ctx, client.WithSessionID("after"))
	if err != nil {
		t.Fatal(err)
	}
	// cgroup v1: the memory and pids lines; v2: the unified one.
	res, err := s.Exec(ctx, `l=$(grep -E ':(memory|pids):' /proc/self/cgroup); [ -n "$l" ] || l=$(grep '^0::' /proc/self/cgroup); echo "$l"
test -e /tmp/replaced && echo REPLACED; true`)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec in a new session: %+v %v", res, err)
	}
	if strings.Contains(res.Stdout, "REPLACED") {
		t.Fatalf("the planted wrapper ran:\n%s", res.Stdout)
	}
	for _, line := range strings.Split(trim(res.Stdout), "\n") {
		if !strings.HasSuffix(line, "/user") {
			t.Errorf("the new session's shell is outside the user cgroup: %q", line)
		}
	}
}
