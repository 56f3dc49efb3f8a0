package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestSnapshotFork snapshots a sandbox's files and forks sandboxes from
// the snapshot: they see the parent's files (written and deleted), each
// has its own name, address and writes, they share one layer on disk, the
// contract's errors answer, and nothing is left after the snapshot and
// its forks are gone.
func TestSnapshotFork(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		ctx := ctxT(t, 6*time.Minute) // gVisor's forks restore memory: slow on a loaded machine
		c := d.Client
		baseline := hostState(t, d)
		parent := c.Sandbox("parent", client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet}))
		run(t, parent, "mkdir -p /workspace/proj && echo parent-data > /workspace/proj/file && rm /etc/nsswitch.conf")
		// A secret the parent got through the API, and an exposed port.
		if err := parent.SetEnvVars(ctx, map[string]string{"PARENT_SECRET": "s3cret"}); err != nil {
			t.Fatal(err)
		}
		if got := trim(run(t, parent, "echo $PARENT_SECRET")); got != "s3cret" {
			t.Fatalf("parent's env: %q", got)
		}
		if _, err := parent.ExposePort(ctx, 8000); err != nil {
			t.Fatal(err)
		}
		pinfo, err := parent.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		memory := onGVisor(t)
		if memory {
			// What a memory snapshot keeps: a running process, shell state
			// and a code context's variable.
			run(t, parent, "(i=0; while :; do i=$((i+1)); echo $i > /tmp/forkcount; sleep 0.05; done) >/dev/null 2>&1 & echo $! > /tmp/forkloop.pid")
			run(t, parent, "export SHELL_VAR=kept; cd /workspace/proj")
			if res, err := parent.RunCode(ctx, "forked = 41", client.RunCodeOptions{}); err != nil || res.Error != nil {
				t.Fatalf("run-code: %+v, %v", res, err)
			}
		}

		snap, err := parent.Snapshot(ctx, "snap-1", client.SnapshotOptions{})
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		if snap.Name != "snap-1" || snap.Sandbox != "parent" || !strings.HasPrefix(snap.Layer, "sha256-") || snap.Size == 0 || snap.Memory != memory {
			t.Fatalf("snapshot = %+v, want memory %v", snap, memory)
		}
		t.Logf("snapshot of %d bytes in %d files, frozen %.1f ms", snap.Size, snap.Files, snap.FrozenMs)
		// The parent runs on, and what it writes now is not in the snapshot.
		run(t, parent, "echo later > /workspace/proj/later")

		t.Run("errors", func(t *testing.T) {
			if _, err := parent.Snapshot(ctx, "snap-1", client.SnapshotOptions{}); codeOf(err) != api.CodeSnapshotExists {
				t.Errorf("same name again: %v, want SNAPSHOT_EXISTS", err)
			}
			for _, bad := range []string{"Bad", "a/b", "..", "-x", strings.Repeat("a", 64), ""} {
				if _, err := parent.Snapshot(ctx, bad, client.SnapshotOptions{}); codeOf(err) != api.CodeInvalidSnapshotName {
					t.Errorf("name %q: %v, want INVALID_SNAPSHOT_NAME", bad, err)
				}
			}
			if _, err := c.Sandbox("nobody").Snapshot(ctx, "x", client.SnapshotOptions{}); codeOf(err) != api.CodeSandboxNotFound {
				t.Errorf("unknown sandbox: %v, want SANDBOX_NOT_FOUND", err)
			}
			if !memory {
				if _, err := parent.Snapshot(ctx, "mem", client.SnapshotOptions{Memory: true}); codeOf(err) != api.CodeMemorySnapshotUnsupported {
					t.Errorf("memory snapshot: %v, want MEMORY_SNAPSHOT_UNSUPPORTED", err)
				}
			}
			if _, err := parent.Snapshot(ctx, "both", client.SnapshotOptions{Memory: true, FilesystemOnly: true}); codeOf(err) != api.CodeValidationFailed {
				t.Errorf("memory and filesystem-only: %v, want VALIDATION_FAILED", err)
			}
			if _, err := c.Sandbox("orphan", client.WithFromSnapshot("no-such")).Ensure(ctx); codeOf(err) != api.CodeSnapshotNotFound {
				t.Errorf("fork of an unknown snapshot: %v, want SNAPSHOT_NOT_FOUND", err)
			}
			if _, err := c.Snapshot(ctx, "no-such"); !errors.Is(err, client.ErrNotFound) {
				t.Errorf("inspect unknown: %v, want not found", err)
			}
		})

		forks := []*client.Sandbox{
			c.Sandbox("fork-1", client.WithFromSnapshot("snap-1"), client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet})),
			c.Sandbox("fork-2", client.WithFromSnapshot("snap-1"), client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet})),
		}
		for i, f := range forks {
			inf, err := f.Ensure(ctx)
			if err != nil {
				t.Fatalf("fork: %v", err)
			}
			noteKeys(d)
			if inf.FromSnapshot != "snap-1" || inf.Runtime != pinfo.Runtime || inf.Image != pinfo.Image {
				t.Errorf("fork = %+v", inf)
			}
			if inf.Network.Address == "" || inf.Network.Address == pinfo.Network.Address {
				t.Errorf("fork address %q, parent's %q: want a new one", inf.Network.Address, pinfo.Network.Address)
			}
			got := run(t, f, "cat /workspace/proj/file; test -e /workspace/proj/later && echo later-leaked; test -e /etc/nsswitch.conf && echo whiteout-lost; hostname; echo \"[$PARENT_SECRET]\"")
			want := "parent-data\n" + f.ID() + "\n[]\n"
			if got != want {
				t.Errorf("fork %d sees %q, want %q", i, got, want)
			}
			if ports, err := f.ExposedPorts(ctx); err != nil || len(ports) != 0 {
				t.Errorf("fork's exposed ports: %+v, %v; want none", ports, err)
			}
			if memory {
				forkedMemory(t, f, inf.Network.Address)
			}
			run(t, f, "echo "+f.ID()+" > /workspace/proj/file")
		}
		if memory {
			run(t, parent, "kill $(cat /tmp/forkloop.pid); cd /workspace")
		}
		// Each fork's writes are its own.
		if got := trim(run(t, forks[0], "cat /workspace/proj/file")); got != "fork-1" {
			t.Errorf("fork-1 reads %q", got)
		}
		if got := trim(run(t, parent, "cat /workspace/proj/file")); got != "parent-data" {
			t.Errorf("parent reads %q after the forks wrote", got)
		}
		layers := filepath.Join(d.StateDir, "snapshots", "layers")
		if entries, _ := os.ReadDir(layers); len(entries) != 1 {
			t.Errorf("%d layers for one snapshot and two forks, want 1 shared", len(entries))
		}
		list, err := c.ListSnapshots(ctx)
		if err != nil || len(list) != 1 || list[0].Name != "snap-1" {
			t.Errorf("list = %+v, %v", list, err)
		}

		if err := c.RemoveSnapshot(ctx, "snap-1"); codeOf(err) != api.CodeSnapshotInUse {
			t.Fatalf("rm while forks exist: %v, want SNAPSHOT_IN_USE", err)
		}
		for _, f := range forks {
			if err := f.Destroy(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.RemoveSnapshot(ctx, "snap-1"); err != nil {
			t.Fatalf("rm: %v", err)
		}
		if entries, _ := os.ReadDir(layers); len(entries) != 0 {
			t.Errorf("layers left after rm: %v", entries)
		}
		t.Run("pause and resume", func(t *testing.T) {
			if onGVisor(t) {
				pauseWithMemory(t, d, parent)
			} else {
				// crun and runc cannot keep memory on this kernel.
				_, errOut, code := cli(t, d, "", "pause", "parent")
				if code == 0 || !strings.Contains(errOut, string(api.CodeMemorySnapshotUnsupported)) {
					t.Errorf("sandbox pause parent: exit %d, %q; want MEMORY_SNAPSHOT_UNSUPPORTED", code, errOut)
				}
			}
			// --filesystem-only behaves like stop.
			out, errOut, code := cli(t, d, "", "pause", "--filesystem-only", "parent")
			if code != 0 || out != "parent\tstopped\n" {
				t.Fatalf("sandbox pause --filesystem-only parent: %q %q exit %d", out, errOut, code)
			}
			if out, errOut, code = cli(t, d, "", "resume", "parent"); code != 0 || out != "parent\trunning\n" {
				t.Fatalf("sandbox resume parent: %q %q exit %d", out, errOut, code)
			}
			if got := trim(run(t, parent, "cat /workspace/proj/file")); got != "parent-data" {
				t.Errorf("files after pause and resume: %q", got)
			}
		})
		// The snapshot CLI, as the contract spells it.
		if out, errOut, code := cli(t, d, "", "snapshot", "create", "parent", "snap-cli"); code != 0 || out != "snap-cli\n" {
			t.Fatalf("sandbox snapshot create: %q %q exit %d", out, errOut, code)
		}
		if out, _, code := cli(t, d, "", "snapshot", "ls"); code != 0 || !strings.Contains(out, "snap-cli") {
			t.Errorf("sandbox snapshot ls: %q exit %d", out, code)
		}
		if out, _, code := cli(t, d, "", "create", "--from-snapshot", "snap-cli", "fork-cli"); code != 0 || out != "fork-cli\n" {
			t.Errorf("sandbox create --from-snapshot: %q exit %d", out, code)
		}
		if _, errOut, code := cli(t, d, "", "snapshot", "rm", "snap-cli"); code == 0 || !strings.Contains(errOut, string(api.CodeSnapshotInUse)) {
			t.Errorf("sandbox snapshot rm while in use: exit %d %q", code, errOut)
		}
		if _, _, code := cli(t, d, "", "rm", "fork-cli"); code != 0 {
			t.Errorf("rm fork-cli: exit %d", code)
		}
		if _, errOut, code := cli(t, d, "", "snapshot", "rm", "snap-cli"); code != 0 {
			t.Errorf("sandbox snapshot rm: exit %d %q", code, errOut)
		}
		if err := parent.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(layers); len(entries) != 0 {
			t.Errorf("layers left after every snapshot was removed: %v", entries)
		}
		if keys := d.Keys(); len(keys) != 0 {
			t.Errorf("sandbox state left after destroy: %v", keys)
		}
		// Nothing of the parent or the forks is left on the host: mounts,
		// network namespaces and links, cgroups, containers, processes.
		if after := hostState(t, d); after != baseline {
			t.Errorf("host state after destroy:\n%s\nbefore:\n%s", after, baseline)
		}
		if procs := processesMentioning(noteKeys(d)); len(procs) != 0 {
			t.Errorf("processes of destroyed sandboxes left: %v", procs)
		}
	})
}

// processesMentioning lists the host processes whose command line names
// one of keys (a runsc sandbox, gofer or command of that sandbox).
func processesMentioning(keys map[string]bool) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		data, _ := os.ReadFile(f)
		cmd := strings.ReplaceAll(string(data), "\x00", " ")
		for k := range keys {
			if strings.Contains(cmd, k) {
				out = append(out, cmd)
			}
		}
	}
	return out
}

// forkedMemory checks what a fork of a memory snapshot holds: the
// parent's background loop still running (and counting on in the fork),
// its shell variable and directory, its Python variable; and that the
// fork's network stack uses the fork's own address.
func forkedMemory(t *testing.T, f *client.Sandbox, address string) {
	ctx := ctxT(t, time.Minute)
	if got := trim(run(t, f, "echo $SHELL_VAR $(pwd); kill -0 $(cat /tmp/forkloop.pid) && echo alive")); got != "kept /workspace/proj\nalive" {
		t.Errorf("fork's shell state and process: %q", got)
	}
	before := trim(run(t, f, "cat /tmp/forkcount"))
	deadline := time.Now().Add(30 * time.Second)
	for trim(run(t, f, "cat /tmp/forkcount")) == before {
		if time.Now().After(deadline) {
			t.Fatal("the parent's background loop does not run in the fork")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res, err := f.RunCode(ctx, "forked + 1", client.RunCodeOptions{}); err != nil || mainText(res) != "42" {
		t.Errorf("the Python variable in the fork: %+v, %v", res, err)
	}
	src := trim(run(t, f, `python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('192.0.2.1', 9)); print(s.getsockname()[0])"`))
	if src != address {
		t.Errorf("the fork's network stack sends from %q, want its own address %q", src, address)
	}
	run(t, f, "kill $(cat /tmp/forkloop.pid); cd /workspace")
}

// pauseWithMemory pauses a gVisor sandbox with its memory and resumes it
// on the next call: a background process, a shell variable and directory
// and a Python variable of the code interpreter are all there after, the
// process having run on from where it was.
func pauseWithMemory(t *testing.T, d *testdaemon.Daemon, sb *client.Sandbox) {
	ctx := ctxT(t, 2*time.Minute)
	run(t, sb, "(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done) >/dev/null 2>&1 & echo $! > /tmp/loop.pid")
	run(t, sb, "export PAUSED_VAR=kept; cd /workspace/proj")
	if res, err := sb.RunCode(ctx, "held = 41", client.RunCodeOptions{}); err != nil || res.Error != nil {
		t.Fatalf("run-code: %+v, %v", res, err)
	}
	// 64 MiB of random bytes: every page of them must come back as it was.
	const digestCode = "import hashlib; hashlib.sha256(big).hexdigest()"
	if res, err := sb.RunCode(ctx, "import os; big = bytearray(os.urandom(64 << 20))", client.RunCodeOptions{}); err != nil || res.Error != nil {
		t.Fatalf("run-code: %+v, %v", res, err)
	}
	res, err := sb.RunCode(ctx, digestCode, client.RunCodeOptions{})
	digest := mainText(res)
	if err != nil || len(digest) < 64 {
		t.Fatalf("run-code: %+v, %v", res, err)
	}
	out, errOut, code := cli(t, d, "", "pause", "parent")
	if code != 0 || out != "parent\tpaused\n" {
		t.Fatalf("sandbox pause parent: %q %q exit %d", out, errOut, code)
	}
	info, err := sb.Info(ctx)
	if err != nil || info.Status != api.StatusPaused {
		t.Fatalf("info after pause: %+v, %v", info, err)
	}
	if out, _, _ := cli(t, d, "", "ls"); !strings.Contains(out, "paused") {
		t.Errorf("sandbox ls does not show paused:\n%s", out)
	}
	key := pausedKey(t, d, "parent")
	limit := cpuLimit(t, key)
	// The next call restores it, transparently.
	if got := trim(run(t, sb, "echo $PAUSED_VAR $(pwd); kill -0 $(cat /tmp/loop.pid) && echo alive")); got != "kept /workspace/proj\nalive" {
		t.Errorf("shell state and process after resume: %q", got)
	}
	checkCPULimitBack(t, d, "parent", key, limit)
	before := trim(run(t, sb, "cat /tmp/count"))
	deadline := time.Now().Add(30 * time.Second)
	for trim(run(t, sb, "cat /tmp/count")) == before {
		if time.Now().After(deadline) {
			t.Fatal("the background loop does not run after the resume")
		}
		time.Sleep(100 * time.Millisecond)
	}
	res, err = sb.RunCode(ctx, "held + 1", client.RunCodeOptions{})
	if err != nil || mainText(res) != "42" {
		t.Errorf("the Python variable after resume: %+v, %v", res, err)
	}
	if res, err := sb.RunCode(ctx, digestCode, client.RunCodeOptions{}); err != nil || mainText(res) != digest {
		t.Errorf("the 64 MiB held in Python after resume: sha256 %q, %v; want %q as before the pause", mainText(res), err, digest)
	}
	if _, err := sb.RunCode(ctx, "del big", client.RunCodeOptions{}); err != nil {
		t.Errorf("run-code: %v", err)
	}
	if entries, _ := filepath.Glob(filepath.Join(d.StateDir, "sandboxes", "*", "memory")); len(entries) != 0 {
		t.Errorf("checkpoints left after the resume: %v", entries)
	}
	run(t, sb, "kill $(cat /tmp/loop.pid); cd /workspace")
}

// TestDaemonKilledMidSnapshot kills the daemon while a snapshot has the
// sandbox frozen: the restarted daemon thaws it (its background process
// keeps running and answering), records no snapshot, and keeps no copy.
func TestDaemonKilledMidSnapshot(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	for _, rt := range runtimes(t) {
		t.Run(rt, func(t *testing.T) { killMidSnapshot(t, rt) })
	}
}

// killMidSnapshot is TestDaemonKilledMidSnapshot on one runtime: on
// gVisor the snapshot keeps memory, so the agent had let go of its socket
// as well when the daemon died.
func killMidSnapshot(t *testing.T, rt string) {
	var args []string
	if rt == "gvisor" {
		args = []string{"--default-runtime", "gvisor"}
	}
	d := testdaemon.Start(t, testdaemon.Options{Args: args, Env: []string{"SANDBOXD_FAILPOINT=snapshot-frozen"}})
	sb := d.Client.Sandbox("frozen")
	run(t, sb, "echo kept > /workspace/f; (while :; do date +%s%N > /tmp/tick; sleep 0.05; done) >/dev/null 2>&1 &")
	if _, err := sb.Snapshot(bg(), "never", client.SnapshotOptions{}); err == nil {
		t.Fatal("the snapshot succeeded; the failpoint did not fire")
	}
	if !d.Exited(10 * time.Second) {
		t.Fatal("the daemon did not die at the failpoint")
	}
	d.SetEnv()
	d.Start(t)
	ctx := ctxT(t, time.Minute)
	info, err := sb.Info(ctx)
	if err != nil || info.Status != api.StatusRunning {
		t.Fatalf("after restart: %+v, %v (want the frozen container thawed and reattached)", info, err)
	}
	// The loop started before the crash still runs: its tick moves.
	first := trim(run(t, sb, "cat /tmp/tick"))
	deadline := time.Now().Add(30 * time.Second)
	for trim(run(t, sb, "cat /tmp/tick")) == first {
		if time.Now().After(deadline) {
			t.Fatal("the background loop does not run after the restart: still frozen?")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := trim(run(t, sb, "cat /workspace/f")); got != "kept" {
		t.Errorf("files: %q", got)
	}
	if list, err := d.Client.ListSnapshots(ctx); err != nil || len(list) != 0 {
		t.Errorf("snapshots after the crash: %+v, %v", list, err)
	}
	for _, dir := range []string{"tmp", "layers", "memory"} {
		if entries, _ := os.ReadDir(filepath.Join(d.StateDir, "snapshots", dir)); len(entries) != 0 {
			t.Errorf("snapshots/%s holds %v after the restart", dir, entries)
		}
	}
}

// TestDaemonKilledMidPause kills the daemon while a pause has the agent
// without its socket (before the checkpoint), then while a resume has just
// restored the container, then after a checkpoint is saved but before the
// pause is recorded: the first restart gives the agent its socket back and
// the sandbox runs on; the second and third find it paused and restore it
// on the next call. Its background loop and shell state survive all three.
func TestDaemonKilledMidPause(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	requireGVisor(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--default-runtime", "gvisor", "--warm-pool", "0", "--idle-check", "100ms"},
		Env: []string{"SANDBOXD_FAILPOINT=pause-suspended"}})
	sb := d.Client.Sandbox("mid-pause")
	run(t, sb, "export KEPT=yes; (while :; do date +%s%N > /tmp/tick; sleep 0.05; done) >/dev/null 2>&1 &")
	ticking := func(when string) {
		t.Helper()
		first := trim(run(t, sb, "cat /tmp/tick"))
		deadline := time.Now().Add(30 * time.Second)
		for trim(run(t, sb, "cat /tmp/tick")) == first {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the background loop does not run", when)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got := trim(run(t, sb, "echo $KEPT")); got != "yes" {
			t.Errorf("%s: shell variable %q", when, got)
		}
	}
	if _, err := sb.Pause(bg(), client.PauseOptions{}); err == nil {
		t.Fatal("the pause succeeded; the failpoint did not fire")
	}
	if !d.Exited(10 * time.Second) {
		t.Fatal("the daemon did not die at the failpoint")
	}
	d.SetEnv("SANDBOXD_FAILPOINT=resume-after-restore")
	d.Start(t)
	ctx := ctxT(t, 3*time.Minute)
	if info, err := sb.Info(ctx); err != nil || info.Status != api.StatusRunning {
		t.Fatalf("after a crash mid-pause: %+v, %v (want it reattached, running)", info, err)
	}
	ticking("after a crash mid-pause")

	if info, err := sb.Pause(ctx, client.PauseOptions{}); err != nil || info.Status != api.StatusPaused {
		t.Fatalf("pause: %+v, %v", info, err)
	}
	if _, err := sb.Exec(bg(), "true"); err == nil {
		t.Fatal("the resume succeeded; the failpoint did not fire")
	}
	if !d.Exited(10 * time.Second) {
		t.Fatal("the daemon did not die at the failpoint")
	}
	d.SetEnv("SANDBOXD_FAILPOINT=pause-after-checkpoint")
	d.Start(t)
	if info, err := sb.Info(ctx); err != nil || info.Status != api.StatusPaused {
		t.Fatalf("after a crash mid-resume: %+v, %v (want it still paused)", info, err)
	}
	ticking("after a crash mid-resume")

	if _, err := sb.Pause(bg(), client.PauseOptions{}); err == nil {
		t.Fatal("the pause succeeded; the failpoint did not fire")
	}
	if !d.Exited(10 * time.Second) {
		t.Fatal("the daemon did not die at the failpoint")
	}
	d.SetEnv()
	d.Start(t)
	if info, err := sb.Info(ctx); err != nil || info.Status != api.StatusPaused {
		t.Fatalf("after a crash between the checkpoint and its record: %+v, %v (want it paused, memory kept)", info, err)
	}
	ticking("after a crash between the checkpoint and its record")
	if err := sb.Destroy(ctx); err != nil {
		t.Fatal(err)
	}

	// Idle with a process running: paused with it, which then runs on.
	idle := d.Client.Sandbox("idle-worker", client.WithSleepAfter(time.Second))
	if _, err := idle.StartProcess(ctx, "while :; do date +%s%N > /tmp/tick; sleep 0.05; done", client.WithProcessID("loop")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, idle, api.StatusPaused, 2*time.Minute)
	first := trim(run(t, idle, "cat /tmp/tick"))
	deadline := time.Now().Add(30 * time.Second)
	for trim(run(t, idle, "cat /tmp/tick")) == first {
		if time.Now().After(deadline) {
			t.Fatal("the process started before the idle pause does not run after it")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p, err := idle.GetProcess(ctx, "loop"); err != nil || p.Status != api.ProcessRunning {
		t.Errorf("process after the idle pause: %+v, %v", p, err)
	}

	// Root in a sandbox sends its agent the signal that rebinds its socket
	// (agentapi.ResumeSignal) without end: its pause fails, and that harms
	// no one else; the sandbox answers its next call.
	rogue := d.Client.Sandbox("usr2-loop")
	run(t, rogue, `nohup sh -c 'while :; do kill -USR2 1; done' >/dev/null 2>&1 &`)
	if got := trim(run(t, rogue, "pgrep -fc 'kill -USR2'")); got == "0" {
		t.Fatal("the signal loop does not run")
	}
	if _, err := rogue.Pause(ctx, client.PauseOptions{}); err == nil {
		t.Log("the pause succeeded despite the signals")
	}
	if got := trim(run(t, rogue, "echo up")); got != "up" {
		t.Errorf("the sandbox after its failed pause: %q", got)
	}
	if got := trim(run(t, idle, "echo up")); got != "up" {
		t.Errorf("another sandbox after the failed pause: %q", got)
	}
	for _, s := range []*client.Sandbox{idle, rogue} {
		if err := s.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if keys := d.Keys(); len(keys) != 0 {
		t.Errorf("sandbox state left after destroy: %v", keys)
	}
}
