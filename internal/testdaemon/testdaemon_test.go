package testdaemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/hostlock"
	"github.com/sandboxd/sandboxd/internal/leftovers"
	"github.com/sandboxd/sandboxd/internal/lxcfs"
)

// TestHeldInterfacePrefixIsSkipped: a test daemon never takes an
// interface prefix another daemon holds (another test process's, picked
// from the same few names), which made it refuse to start.
func TestHeldInterfacePrefixIsSkipped(t *testing.T) {
	SkipUnlessRoot(t)
	if err := os.MkdirAll(hostlock.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	next := ifacePrefix(os.Getpid(), int(seq.Load())+1)
	held, err := hostlock.Acquire(hostlock.Path(hostlock.Dir, "iface", next))
	if err != nil {
		t.Fatalf("holding %s as another daemon would: %v", next, err)
	}
	defer held.Release()
	d := Start(t, Options{})
	if d.IfacePrefix == next || len(d.IfacePrefix) != 3 {
		t.Errorf("the daemon's prefix is %q beside a held %q", d.IfacePrefix, next)
	}
}

// fatalRecorder is a testing.TB whose Fatal ends only the goroutine that
// called it and keeps the message.
type fatalRecorder struct {
	testing.TB
	msg chan string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatal(args ...any) {
	f.msg <- fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestStartFailsAtOnceWhenTheDaemonExits: a daemon that exits at once
// fails Start at once, with its output, not after the 30 s a daemon gets
// to listen (an exited, unwaited daemon is a zombie, which takes signals).
func TestStartFailsAtOnceWhenTheDaemonExits(t *testing.T) {
	SkipUnlessRoot(t)
	dir := t.TempDir()
	t.Setenv("SANDBOXD_BIN_DIR", dir) // nothing is built: the daemon is the script
	script := filepath.Join(dir, "sandboxd")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'cannot start: no such runtime' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fatalRecorder{TB: t, msg: make(chan string, 1)}
	start := time.Now()
	go func() {
		Start(f, Options{})
		f.msg <- ""
	}()
	msg := <-f.msg
	// Waiting for the serving line instead would take Start's 2 minutes.
	if took := time.Since(start); took > 30*time.Second || !strings.Contains(msg, "cannot start: no such runtime") {
		t.Errorf("Start failed after %s with %q, want at once with the daemon's output", took.Round(time.Millisecond), msg)
	}
}

// TestExitedYet: the gateway's check tells an exited process that was not
// waited for (a zombie) from a running one, and leaves the wait to the
// caller.
func TestExitedYet(t *testing.T) {
	running := exec.Command("sleep", "1237")
	exited := exec.Command("true")
	for _, c := range []*exec.Cmd{running, exited} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	defer running.Wait()
	defer running.Process.Kill()
	for deadline := time.Now().Add(5 * time.Second); !exitedYet(exited); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("an exited process is not reported as exited")
		}
	}
	if exitedYet(running) {
		t.Error("a running process is reported as exited")
	}
	if err := exited.Wait(); err != nil {
		t.Errorf("the caller's wait: %v", err)
	}
}

func TestMain(m *testing.M) { Main(m) }

// TestStopSignalTearsTheDaemonsDown: a test process that gets SIGTERM
// mid-test destroys its daemons' sandboxes, stops the daemons and removes
// what they left on the host (lxcfs, mounts, cgroups, nft table) before
// it dies of the signal, as its tests' cleanups would have. The process
// is this test binary again, running the test below that starts a daemon
// and a sandbox and then waits to be stopped.
func TestStopSignalTearsTheDaemonsDown(t *testing.T) {
	SkipUnlessRoot(t)
	cmd, state, stderr := startUntilStopped(t)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the child test did not exit within 3 minutes of SIGTERM:\n%s", stderr.String())
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("the child test ended with %v, want death by SIGTERM", err)
	}
	t.Logf("the child test's output:\n%s", stderr.String())
	checkTornDown(t, state)
	if !strings.Contains(stderr.String(), "tearing down 1 test daemons") {
		t.Errorf("the child test did not say it tore its daemon down:\n%s", stderr.String())
	}
}

// TestKilledTestProcessIsSweptByTheNext: what a test process that was
// killed outright (SIGKILL; a `go test -timeout` panics, with the same
// effect) left running, its daemon, sandbox, lxcfs and mounts, the next
// test process to start a daemon tears down.
func TestKilledTestProcessIsSweptByTheNext(t *testing.T) {
	SkipUnlessRoot(t)
	for _, daemonToo := range []bool{false, true} {
		name := "daemon running"
		if daemonToo {
			name = "daemon killed too"
		}
		t.Run(name, func(t *testing.T) { testKilledTestProcessIsSwept(t, daemonToo) })
	}
}

// testKilledTestProcessIsSwept is TestKilledTestProcessIsSweptByTheNext
// with the daemon running on after its test process, or killed as well
// (its sandbox then runs on alone, in the runtime's hands).
func testKilledTestProcessIsSwept(t *testing.T, daemonToo bool) {
	cmd, state, stderr := startUntilStopped(t)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if goneWithin(state.Daemon, time.Second) {
		t.Fatalf("the daemon (pid %d) ended with its test process: nothing is left to sweep\n%s", state.Daemon, stderr.String())
	}
	if daemonToo {
		syscall.Kill(state.Daemon, syscall.SIGKILL)
		if !goneWithin(state.Daemon, 10*time.Second) {
			t.Fatalf("the daemon (pid %d) outlived SIGKILL", state.Daemon)
		}
		if goneWithin(state.Agent, time.Second) {
			t.Fatalf("the sandbox's agent (pid %d) ended with its daemon: the runtime's part is not tested", state.Agent)
		}
	}
	if m := leftovers.MountsBelow(state.RunDir, state.StateDir); len(m) == 0 {
		t.Errorf("the killed test process left no mounts; the sweep is not tested on them")
	}
	var logs strings.Builder
	sweepStaleNow(func(format string, args ...any) { fmt.Fprintf(&logs, format+"\n", args...) })
	t.Logf("the sweep:\n%s", logs.String())
	checkTornDown(t, state)
	if !strings.Contains(logs.String(), state.RunDir) {
		t.Errorf("the sweep did not say it tore down the daemon in %s", state.RunDir)
	}
}

// untilStopped is what TestDaemonUntilStopped started.
type untilStopped struct {
	Daemon, Agent                                int
	RunDir, StateDir, CgroupParent, Table, Lxcfs string
}

// startUntilStopped runs TestDaemonUntilStopped in a child test process
// and returns once its daemon and sandbox run.
func startUntilStopped(t *testing.T) (*exec.Cmd, untilStopped, *strings.Builder) {
	t.Helper()
	BinDir(t) // built once here, not in the child
	cmd := exec.Command(os.Args[0], "-test.run", "^TestDaemonUntilStopped$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTDAEMON_UNTIL_STOPPED=1", "SANDBOXD_BIN_DIR="+BinDir(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var state untilStopped
	var log strings.Builder
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if v, ok := strings.CutPrefix(sc.Text(), "UNTIL STOPPED "); ok {
			if err := json.Unmarshal([]byte(v), &state); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if state.Agent == 0 {
		cmd.Wait()
		t.Fatalf("the child test did not start its sandbox:\n%s%s", log.String(), stderr.String())
	}
	go io.Copy(io.Discard, out)
	return cmd, state, stderr
}

// checkTornDown checks that nothing of what TestDaemonUntilStopped
// started is left.
func checkTornDown(t *testing.T, state untilStopped) {
	t.Helper()
	lxcfsPID, _ := strconv.Atoi(state.Lxcfs)
	for what, pid := range map[string]int{"daemon": state.Daemon, "sandbox's agent": state.Agent, "daemon's lxcfs": lxcfsPID} {
		if pid > 0 && !goneWithin(pid, 10*time.Second) {
			t.Errorf("the %s (pid %d) still runs", what, pid)
			syscall.Kill(pid, syscall.SIGKILL) // the child's: ours to remove
		}
	}
	if m := leftovers.MountsBelow(state.RunDir, state.StateDir); len(m) > 0 {
		t.Errorf("mounts left: %q", m)
	}
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + state.CgroupParent); len(left) > 0 {
		t.Errorf("cgroups left: %q", left)
	}
	if exec.Command("nft", "list", "table", "inet", state.Table).Run() == nil {
		t.Errorf("nft table %s left", state.Table)
	}
	for _, dir := range []string{state.RunDir, state.StateDir} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("directory %s left", dir)
		}
	}
}

// goneWithin waits up to limit for the process pid to end (a zombie has
// ended) and reports whether it did.
func goneWithin(pid int, limit time.Duration) bool {
	for deadline := time.Now().Add(limit); ; time.Sleep(50 * time.Millisecond) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestDaemonUntilStopped is TestStopSignalTearsTheDaemonsDown's child: it
// runs only there.
func TestDaemonUntilStopped(t *testing.T) {
	if os.Getenv("TESTDAEMON_UNTIL_STOPPED") != "1" {
		t.Skip("the child of TestStopSignalTearsTheDaemonsDown")
	}
	d := Start(t, Options{Args: []string{"--default-network", "none"}})
	if res, err := d.Client.Sandbox("until-stopped").Exec(context.Background(), "true"); err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %v %+v", err, res)
	}
	lxcfsPID, _ := os.ReadFile(lxcfs.PIDFile(d.RunDir))
	state, _ := json.Marshal(map[string]any{"Daemon": d.PID(), "Agent": d.AgentPID(t, d.Keys()[0]), "RunDir": d.RunDir, "StateDir": d.StateDir,
		"CgroupParent": d.CgroupParent, "Table": d.Table, "Lxcfs": strings.TrimSpace(string(lxcfsPID))})
	fmt.Printf("UNTIL STOPPED %s\n", state)
	time.Sleep(3 * time.Minute) // the parent's SIGTERM comes first
	t.Error("not stopped within 3 minutes")
}

// TestOwnerRecordThatNamesTooMuchIsLeftAlone: a record whose directories
// or cgroup would reach beyond one daemon's (an empty state directory is
// every mount of the host to leftovers.Remove) is never swept.
func TestOwnerRecordThatNamesTooMuchIsLeftAlone(t *testing.T) {
	good := owner{PID: 1, Start: 1, StateDir: "/tmp/TestX/001", Table: "sbdtest1_1", CgroupParent: "sbdtest1_1"}
	if !good.valid() {
		t.Fatalf("%+v is not valid", good)
	}
	for name, change := range map[string]func(*owner){
		"no state directory":     func(o *owner) { o.StateDir = "" },
		"the root":               func(o *owner) { o.StateDir = "/" },
		"a relative state":       func(o *owner) { o.StateDir = "tmp/x" },
		"no cgroup parent":       func(o *owner) { o.CgroupParent = "" },
		"a cgroup parent's path": func(o *owner) { o.CgroupParent = "a/b" },
		"a cgroup parent's glob": func(o *owner) { o.CgroupParent = "*" },
		"no table":               func(o *owner) { o.Table = "" },
		"no owner's start":       func(o *owner) { o.Start = 0 },
	} {
		o := good
		change(&o)
		if o.valid() {
			t.Errorf("%s: %+v is valid", name, o)
		}
	}
}
