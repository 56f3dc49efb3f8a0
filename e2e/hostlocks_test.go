package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/hostlock"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestDaemonsDoNotShareHostNames: a second daemon that names the run
// directory, cgroup parent, interface prefix or nftables table of a
// running one refuses to start, saying which, before it touches anything
// (once, two daemons sharing the default run directory collected each
// other's containers as orphans). The running daemon's sandbox is
// untouched.
func TestDaemonsDoNotShareHostNames(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("first")
	run(t, sb, "echo kept > /workspace/f; sleep 600 >/dev/null 2>&1 &")
	bin := testdaemon.BinDir(t)
	for _, c := range []struct{ flag, value, says string }{
		{"--run-dir", d.RunDir, "run directory"},
		{"--cgroup-parent", d.CgroupParent, "cgroup parent"},
		{"--iface-prefix", d.IfacePrefix, "interface prefix"},
		{"--nft-table", d.Table, "nftables table"},
	} {
		t.Run(strings.TrimPrefix(c.flag, "--"), func(t *testing.T) {
			run, err := os.MkdirTemp("/tmp", "sbd")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(run)
			args := map[string]string{
				"--state-dir": t.TempDir(), "--run-dir": run, "--listen": "127.0.0.1:0",
				"--agent": filepath.Join(bin, "sandbox-agent"), "--nft-table": "sbdlock" + d.Table,
				"--iface-prefix": "zzz", "--cgroup-parent": "sbdlock" + d.CgroupParent, "--warm-pool": "0",
			}
			args[c.flag] = c.value
			var argv []string
			for k, v := range args {
				argv = append(argv, k, v)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, filepath.Join(bin, "sandboxd"), argv...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), "the "+c.says+" "+c.value+" ") ||
				!strings.Contains(string(out), "in use by another running sandboxd (pid ") {
				t.Errorf("a second daemon with %s %s: %v\n%s", c.flag, c.value, err, out)
			}
		})
	}
	if got := trim(run(t, sb, "cat /workspace/f; pgrep -c sleep")); got != "kept\n1" {
		t.Errorf("the first daemon's sandbox after the refusals: %q", got)
	}
}

// TestHostLockFilesGoWithTheirDaemon: a daemon that stops removes its
// lock files from /run/lock/sandboxd (every test daemon has names of its
// own, and their files piled up by the thousands); a killed daemon's are
// removed by the next daemon that starts.
func TestHostLockFilesGoWithTheirDaemon(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	lockFiles := func(d *testdaemon.Daemon) []string {
		return []string{
			filepath.Join(hostlock.Dir, "cgroup-"+d.CgroupParent+".lock"),
			filepath.Join(hostlock.Dir, "iface-"+d.IfacePrefix+".lock"),
			filepath.Join(hostlock.Dir, "nft-"+d.Table+".lock"),
		}
	}
	exist := func(t *testing.T, when string, paths []string, want bool) {
		t.Helper()
		for _, p := range paths {
			if _, err := os.Stat(p); (err == nil) != want {
				t.Errorf("%s: %s exists: %v, want %v", when, p, err == nil, want)
			}
		}
	}
	stopped := testdaemon.Start(t, testdaemon.Options{})
	exist(t, "while the daemon runs", lockFiles(stopped), true)
	stopped.Stop(t)
	exist(t, "after the daemon stopped", lockFiles(stopped), false)

	killed := testdaemon.Start(t, testdaemon.Options{})
	killed.Kill(t)
	exist(t, "after the daemon was killed", lockFiles(killed), true)
	testdaemon.Start(t, testdaemon.Options{})
	exist(t, "after the next daemon started", lockFiles(killed), false)
}

// TestAFailedStartTakesBackItsCgroupParent: a daemon whose start fails
// after it made its parent cgroup (here on an interface prefix only the
// network's setup refuses) removes it again: a daemon that never starts
// again with that --cgroup-parent left it on the host for good.
func TestAFailedStartTakesBackItsCgroupParent(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	bin := testdaemon.BinDir(t)
	run, err := os.MkdirTemp("/tmp", "sbd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(run)
	parent := "sbdfail" + strings.TrimPrefix(filepath.Base(run), "sbd")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "sandboxd"), "--state-dir", t.TempDir(), "--run-dir", run,
		"--listen", "127.0.0.1:0", "--agent", filepath.Join(bin, "sandbox-agent"), "--nft-table", parent,
		"--iface-prefix", "q1", "--cgroup-parent", parent, "--warm-pool", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "interface prefix") {
		t.Fatalf("the start with a bad interface prefix: %v\n%s", err, out)
	}
	left, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	if _, err := os.Stat("/sys/fs/cgroup/" + parent); err == nil {
		left = append(left, "/sys/fs/cgroup/"+parent)
	}
	for _, d := range left {
		os.Remove(d)
	}
	if len(left) > 0 {
		t.Errorf("the failed start left its parent cgroup: %v", left)
	}
}
