package testdaemon

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/hostlock"
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
