package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/leftovers"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

func TestConcurrentFirstCallsCreateOneSandbox(t *testing.T) {
	d := daemon(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := d.Client.Sandbox("racer").Exec(ctxT(t, 60*time.Second), "echo $$ >> /workspace/pids")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := trim(run(t, d.Client.Sandbox("racer"), "wc -l < /workspace/pids")); got != "8" {
		t.Errorf("8 writers left %s lines: they did not share one sandbox", got)
	}
	list, _ := d.Client.List(ctxT(t, 10*time.Second))
	if len(list) != 1 {
		t.Errorf("%d sandboxes listed, want 1", len(list))
	}
}

func TestStateSurvivesKill9OfTheDaemon(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("durable")
		run(t, sb, "echo kept > /workspace/file && cd /tmp && export SESSION_VAR=still-here")
		d.Kill(t)
		d.Start(t)
		sb = d.Client.Sandbox("durable")
		list, err := d.Client.List(ctxT(t, 10*time.Second))
		if err != nil || len(list) != 1 || list[0].ID != "durable" {
			t.Fatalf("after kill -9: list = %v, %v", list, err)
		}
		// Reattached: files, and even the shell's state, are intact.
		if got := trim(run(t, sb, "cat /workspace/file; pwd; echo $SESSION_VAR")); got != "kept\n/tmp\nstill-here" {
			t.Errorf("after kill -9 and restart: %q", got)
		}
	})
}

// TestRestartKeepsTheRootOfRunningSandboxes: a daemon restart (SIGTERM,
// then kill -9) rebuilds the host image; the running sandboxes it
// reattaches must keep the skeleton below their overlay (it once emptied
// their roots: `ls /` printed nothing, /tmp and /etc/passwd were gone).
func TestRestartKeepsTheRootOfRunningSandboxes(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("rooted")
		const probe = "ls / | wc -l; test -d /tmp && echo tmp; id -un; echo $MARK"
		run(t, sb, "export MARK=reattached")
		want := trim(run(t, sb, probe))
		if !strings.HasSuffix(want, "tmp\nroot\nreattached") {
			t.Fatalf("before any restart: %q", want)
		}
		for _, restart := range []struct {
			name string
			stop func(testing.TB)
		}{{"SIGTERM", d.Stop}, {"kill -9", d.Kill}} {
			restart.stop(t)
			d.Start(t)
			if got := trim(run(t, sb, probe)); got != want {
				t.Errorf("after a restart by %s: %q, want %q", restart.name, got, want)
			}
		}
		// An unchanged skeleton is reused, not rebuilt beside the old one.
		if versions, _ := os.ReadDir(filepath.Join(d.StateDir, "images", "hostfs")); len(versions) != 1 {
			t.Errorf("%d host image versions after two restarts, want 1", len(versions))
		}
		if got := trim(run(t, d.Client.Sandbox("fresh"), "ls / | wc -l; id -un")); got != strings.Join(strings.Split(want, "\n")[:1], "")+"\nroot" {
			t.Errorf("a sandbox created after the restarts: %q", got)
		}
	})
}

func TestFilesSurviveAHostRebootSimulation(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("rebooted")
	run(t, sb, "echo kept > /workspace/file")
	// A second sandbox whose files an operator removes while the host is
	// down: it is lost, not started again on an empty disk.
	keptKeys := d.Keys()
	lost := d.Client.Sandbox("vanished")
	run(t, lost, "echo gone > /workspace/file")
	var lostKey string
	for _, k := range d.Keys() {
		if !slices.Contains(keptKeys, k) {
			lostKey = k
		}
	}
	// Simulate a reboot: the daemon and every sandbox process die, and
	// everything in /run and every mount is gone.
	pids := []int{}
	for _, k := range d.Keys() {
		pids = append(pids, d.AgentPID(t, k))
	}
	d.Kill(t)
	for _, pid := range pids { // this daemon's sandboxes only
		syscall.Kill(pid, syscall.SIGKILL)
	}
	simulateReboot(t, d)
	if err := os.RemoveAll(filepath.Join(d.StateDir, "sandboxes", lostKey)); err != nil || lostKey == "" {
		t.Fatalf("removing the second sandbox's files (key %q): %v", lostKey, err)
	}
	d.Start(t)
	if got := trim(run(t, sb, "cat /workspace/file")); got != "kept" {
		t.Errorf("after a simulated reboot: %q", got)
	}
	ctx := ctxT(t, 60*time.Second)
	if inf, err := lost.Info(ctx); err != nil || inf.Status != api.StatusLost {
		t.Errorf("sandbox whose files were removed: %+v %v, want lost", inf, err)
	}
	var apiErr *client.Error
	if _, err := lost.Exec(ctx, "cat /workspace/file"); !errors.As(err, &apiErr) || apiErr.Code != api.CodeSandboxLost {
		t.Errorf("exec on a lost sandbox: %v, want SANDBOX_LOST", err)
	}
	if err := lost.Destroy(ctx); err != nil {
		t.Errorf("destroying a lost sandbox: %v", err)
	}
}

func simulateReboot(t *testing.T, d *testdaemon.Daemon) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	for _, m := range leftovers.MountsBelow(d.StateDir, d.RunDir) {
		exec.Command("umount", "-l", m).Run()
	}
	entries, _ := os.ReadDir(d.RunDir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(d.RunDir, e.Name()))
	}
}

func TestDestroyLeavesNothingBehind(t *testing.T) {
	d := daemon(t)
	before := hostState(t, d)
	for _, id := range []string{"gone-none", "gone-net"} {
		opts := []client.SandboxOption{}
		sb := d.Client.Sandbox(id, opts...)
		run(t, sb, "echo data > /workspace/f; sleep 300 >/dev/null 2>&1 &")
	}
	during := hostState(t, d) // also notes the sandboxes' keys
	if during == before {
		t.Fatal("creating sandboxes left no trace to look for; the check is blind")
	}
	for _, id := range []string{"gone-none", "gone-net"} {
		if err := d.Client.Sandbox(id).Destroy(ctxT(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Client.Sandbox(id).Info(ctxT(t, 10*time.Second)); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("Info after destroy = %v", err)
		}
	}
	if after := hostState(t, d); after != before {
		t.Errorf("host state after destroy differs from before create:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if err := d.Client.Sandbox("gone-net").Destroy(ctxT(t, 10*time.Second)); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("destroying twice = %v, want ErrNotFound", err)
	}
}

// seenKeys accumulates, per daemon, the sandbox keys it has had, so that
// hostState can look for their cgroups after they are gone (other daemons
// of other tests may have theirs meanwhile).
var seenKeys = struct {
	sync.Mutex
	m map[*testdaemon.Daemon]map[string]bool
}{m: map[*testdaemon.Daemon]map[string]bool{}}

// noteKeys records the daemon's current sandbox keys.
func noteKeys(d *testdaemon.Daemon) map[string]bool {
	seenKeys.Lock()
	defer seenKeys.Unlock()
	if seenKeys.m[d] == nil {
		seenKeys.m[d] = map[string]bool{}
	}
	for _, k := range d.Keys() {
		seenKeys.m[d][k] = true
	}
	return seenKeys.m[d]
}

// hostState describes everything this daemon's sandboxes leave on the
// host: mounts, network namespaces, links, cgroups, loop devices,
// directories and containers.
func hostState(t *testing.T, d *testdaemon.Daemon) string {
	t.Helper()
	keys := noteKeys(d)
	var b strings.Builder
	b.WriteString("mounts:\n" + strings.Join(leftovers.MountsBelow(d.StateDir, d.RunDir), "\n") + "\n")
	out, _ := exec.Command("ip", "-o", "link", "show").Output()
	b.WriteString("links:\n")
	for _, line := range strings.Split(string(out), "\n") {
		for k := range keys {
			if strings.Contains(line, k) {
				b.WriteString(line + "\n")
			}
		}
	}
	b.WriteString("cgroups:\n")
	for k := range keys {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/*/" + k)
		more, _ := filepath.Glob("/sys/fs/cgroup/*/" + k)
		for _, dir := range append(dirs, more...) {
			b.WriteString(dir + "\n")
		}
	}
	loops, _ := exec.Command("losetup", "-a").Output()
	for _, line := range strings.Split(string(loops), "\n") {
		if strings.Contains(line, d.StateDir) {
			b.WriteString("loop: " + line + "\n")
		}
	}
	for _, dir := range []string{filepath.Join(d.StateDir, "sandboxes"), filepath.Join(d.RunDir, "sandboxes"), filepath.Join(d.RunDir, "netns")} {
		entries, _ := os.ReadDir(dir)
		b.WriteString(dir + ":")
		for _, e := range entries {
			b.WriteString(" " + e.Name())
		}
		b.WriteString("\n")
	}
	ctrs, _ := exec.Command("sh", "-c", "ls "+filepath.Join(d.RunDir, "runtime", "*")+" 2>/dev/null").Output()
	b.WriteString("containers:\n" + string(ctrs))
	return b.String()
}
