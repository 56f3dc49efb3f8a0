package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/hostlock"
	"github.com/sandboxd/sandboxd/internal/store"
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
			out, err := sandboxdOnce(bin, args)
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
	// A start that fails after the cgroup parent was made: the host
	// image's directory cannot be made, a regular file is in its way.
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "images"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "sandboxd"), "--state-dir", state, "--run-dir", run,
		"--listen", "127.0.0.1:0", "--agent", filepath.Join(bin, "sandbox-agent"), "--nft-table", parent,
		"--iface-prefix", freeIfacePrefix(t), "--cgroup-parent", parent, "--warm-pool", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "host image") {
		t.Fatalf("the start with the host image's directory blocked: %v\n%s", err, out)
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

// freeIfacePrefix returns an interface prefix no running daemon holds (nor
// one it starts with, nor one that starts with it): "h" and two letters,
// which test daemons (q-z) and the default (sbx) never use.
func freeIfacePrefix(t *testing.T) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	start := os.Getpid()
	for i := range 26 * 26 {
		v := (start + i) % (26 * 26)
		p := "h" + string(letters[v/26]) + string(letters[v%26])
		held := false
		for n := 1; n <= len(p); n++ {
			held = held || hostlock.Held(hostlock.Path(hostlock.Dir, "iface", p[:n]))
		}
		if !held {
			return p
		}
	}
	t.Skip("every h.. interface prefix is held")
	return ""
}

// TestABadFlagIsRefusedBeforeAnythingIsMade: a flag the daemon cannot use
// fails its start before it makes anything: no state directory, run
// directory, cgroup parent or lock file. --subnet, --dns, --iface-prefix,
// --nft-table and --listen were once found bad only after the state
// directory (token, registry), host locks and cgroup parent were made.
func TestABadFlagIsRefusedBeforeAnythingIsMade(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	bin := testdaemon.BinDir(t)
	for _, c := range []struct{ flag, value, says string }{
		{"--subnet", "10.77.0.0/31", "subnet"},
		{"--subnet", "10.77.0.1/24", "host bits"},
		{"--subnet", "fd00:77::/64", "subnet"},
		{"--dns", "fd00::53", "DNS"},
		{"--iface-prefix", "q1", "interface prefix"},
		{"--iface-prefix", "abcd", "interface prefix"},
		{"--nft-table", "a-b", "table"},
		{"--nft-table", "1ab", "table"},
		{"--listen", "7070", "--listen"},
		{"--listen", "127.0.0.1:70700", "--listen"},
		{"--preview-listen", "127.0.0.1:x y", "--preview-listen"},
	} {
		t.Run(c.flag+"="+c.value, func(t *testing.T) {
			// Short: --run-dir has at most 60 bytes.
			dir, err := os.MkdirTemp("/tmp", "sbd")
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(dir)
			state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
			parent := "sbdbad" + strings.TrimPrefix(filepath.Base(dir), "sbd")
			args := map[string]string{
				"--state-dir": state, "--run-dir": run, "--listen": "127.0.0.1:0",
				"--agent": filepath.Join(bin, "sandbox-agent"), "--nft-table": "hygbad", "--iface-prefix": freeIfacePrefix(t),
				"--cgroup-parent": parent, "--warm-pool": "0",
			}
			args[c.flag] = c.value
			out, err := sandboxdOnce(bin, args)
			left, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
			if _, err := os.Stat("/sys/fs/cgroup/" + parent); err == nil {
				left = append(left, "/sys/fs/cgroup/"+parent)
			}
			for _, d := range left {
				os.Remove(d)
			}
			if err == nil || !strings.Contains(string(out), c.says) {
				t.Fatalf("start: %v, want a failure that says %q:\n%s", err, c.says, out)
			}
			for _, d := range []string{state, run} {
				if _, err := os.Stat(d); err == nil {
					t.Errorf("the refused start made %s", d)
				}
			}
			if len(left) > 0 {
				t.Errorf("the refused start made cgroups %v", left)
			}
			if _, err := os.Stat(hostlock.Path(hostlock.Dir, "cgroup", parent)); err == nil {
				t.Errorf("the refused start left its cgroup parent's lock file")
			}
		})
	}
}

// sandboxdOnce runs bin's sandboxd with the flags in args until it exits
// (at most a minute) and returns its output.
func sandboxdOnce(bin string, args map[string]string) ([]byte, error) {
	var argv []string
	for k, v := range args {
		argv = append(argv, k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, filepath.Join(bin, "sandboxd"), argv...).CombinedOutput()
}

// TestAStartThatCannotListenMakesNothing: a daemon whose port is taken
// fails before it makes anything on the host. It used to find out after
// its network, lxcfs and the agent's shared mounts were made, and left
// them behind: the nft table, the lxcfs process and its mount, and
// tmpfs mounts in its run directory.
func TestAStartThatCannotListenMakesNothing(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	bin := testdaemon.BinDir(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, flag := range []string{"--listen", "--preview-listen"} {
		t.Run(flag, func(t *testing.T) {
			dir, table, args := onceArgs(t, bin, "listen")
			args[flag] = taken.Addr().String()
			out, err := sandboxdOnce(bin, args)
			left := removeLeftBehind(dir, table)
			if err == nil || !strings.Contains(string(out), "address already in use") {
				t.Fatalf("start: %v, want a failure that says the address is in use:\n%s", err, out)
			}
			if len(left) > 0 {
				t.Errorf("the failed start left %v", left)
			}
		})
	}
}

// onceArgs returns the flags of a daemon started once (sandboxdOnce) with
// names of its own: its state and run directories below dir (removed at
// the end of the test), its nft table table, its cgroup parent and
// interface prefix.
func onceArgs(t *testing.T, bin, name string) (dir, table string, args map[string]string) {
	dir, err := os.MkdirTemp("/tmp", "sbd") // --run-dir has at most 60 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	suffix := strings.TrimPrefix(filepath.Base(dir), "sbd")
	table = "hyg" + name + strings.ToLower(suffix)
	args = map[string]string{
		"--state-dir": filepath.Join(dir, "state"), "--run-dir": filepath.Join(dir, "run"), "--listen": "127.0.0.1:0",
		"--agent": filepath.Join(bin, "sandbox-agent"), "--nft-table": table, "--iface-prefix": freeIfacePrefix(t),
		"--cgroup-parent": "sbd" + name + suffix, "--warm-pool": "0",
	}
	return dir, table, args
}

// removeLeftBehind lists and removes what a daemon whose directories are
// below dir and whose nft table is table left on the host: mounts, the
// table, processes (lxcfs).
func removeLeftBehind(dir, table string) []string {
	var left []string
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); true {
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				left = append(left, "mount "+f[4])
				exec.Command("umount", "-l", f[4]).Run()
			}
		}
	}
	if exec.Command("nft", "list", "table", "inet", table).Run() == nil {
		left = append(left, "nft table "+table)
		exec.Command("nft", "delete", "table", "inet", table).Run()
	}
	if pids, _ := exec.Command("pgrep", "-f", dir).Output(); len(pids) > 0 {
		left = append(left, "processes "+strings.Join(strings.Fields(string(pids)), " "))
		exec.Command("pkill", "-f", dir).Run()
	}
	return left
}

// TestAFailedStartWithNoSandboxTakesBackWhatItMade: a daemon whose start
// fails after its network, lxcfs and the shared binaries' mounts were made
// (here: its volume store cannot open) removes them again when its
// registry has no sandbox, and keeps them when it has one (which needs
// them, and the next start reuses them). It used to leave them for good.
func TestAFailedStartWithNoSandboxTakesBackWhatItMade(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	bin := testdaemon.BinDir(t)
	for _, withSandbox := range []bool{false, true} {
		t.Run(fmt.Sprintf("sandbox=%v", withSandbox), func(t *testing.T) {
			dir, table, args := onceArgs(t, bin, "fail")
			state := args["--state-dir"]
			if err := os.MkdirAll(state, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(state, "volumes"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if withSandbox {
				db, err := store.Open(filepath.Join(state, "registry.db"))
				if err != nil {
					t.Fatal(err)
				}
				err = db.Insert(context.Background(), store.Sandbox{ID: "kept", Key: "kept", Status: "running", Config: []byte("{}"), NetSlot: -1,
					CreatedAt: time.Now(), LastUsedAt: time.Now(), StatusChangedAt: time.Now()})
				db.Close()
				if err != nil {
					t.Fatal(err)
				}
			}
			out, err := sandboxdOnce(bin, args)
			left := removeLeftBehind(dir, table)
			os.Remove("/sys/fs/cgroup/" + args["--cgroup-parent"])
			if err == nil || !strings.Contains(string(out), "volume store") {
				t.Fatalf("start: %v, want a failure at the volume store:\n%s", err, out)
			}
			kept := strings.Join(left, " ")
			switch {
			case !withSandbox && len(left) > 0:
				t.Errorf("the failed start with no sandbox left %v", left)
			case withSandbox && (!strings.Contains(kept, "nft table") || !strings.Contains(kept, "/lxcfs") || !strings.Contains(kept, "/agent")):
				t.Errorf("the failed start with a sandbox kept %v, want its table, lxcfs and the agent's mount", left)
			}
		})
	}
}
