package session

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/proctree"
)

// TestUnwindSignalRightAfterTheStatusLine: the agent may stop command n
// while the shell is still inside the printf of command n-1's status line
// (descheduled right after its write, when the agent woke up). The trap
// then runs with that printf as BASH_COMMAND, which must not be taken for
// command n's own status line: command n is unwound, nothing of it runs.
//
// The shell is held inside the previous status line by a FIFO that is
// opened for reading only after the signal was sent: bash runs the trap
// when the open, interrupted, is tried again.
func TestUnwindSignalRightAfterTheStatusLine(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash")
	}
	dir := t.TempDir()
	prevStatus, status := filepath.Join(dir, "prev"), filepath.Join(dir, "status")
	if err := syscall.Mkfifo(prevStatus, 0o600); err != nil {
		t.Fatal(err)
	}
	after := filepath.Join(dir, "after")
	if err := os.WriteFile(filepath.Join(dir, cmdFile), []byte("echo x > "+quote(after)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// What the dispatch loop runs: command 1's status line, then command 2.
	statusLine := func(n uint64, path string) string {
		return `command printf '%s %s\n' "$__sbx_s" ` + strings.TrimSpace(string(unwindMarker(n))) + ` >` + quote(path)
	}
	script := unwindInit(dir) + "__sbx_s=0; " + statusLine(1, prevStatus) + "; " +
		"{ for __sbx_a in 1; do for __sbx_b in 1; do command . " + quote(dir+"/"+cmdFile) + "; done; done; " +
		"__sbx_s=$?; " + statusLine(2, status) + "; }\n"
	cmd := exec.Command(bash, "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait() // ECHILD if this package's reaper took it
	}()
	waitForWchan(t, cmd.Process.Pid, "wait_for_partner") // in the open of prevStatus
	if err := os.WriteFile(filepath.Join(dir, unwindFile), unwindMarker(2), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.Signal(unwindSignal))
	time.Sleep(50 * time.Millisecond) // the trap runs before the open is tried again
	prev, err := os.ReadFile(prevStatus)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(prev); got != "0 000000000000001\n" {
		t.Fatalf("previous status line = %q", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	var got []byte
	for ; len(got) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		got, _ = os.ReadFile(status)
	}
	if string(got) != "137 000000000000002\n" {
		t.Errorf("status line of the stopped command = %q, want it unwound (137)", got)
	}
	if _, err := os.Stat(after); err == nil {
		t.Error("the command ran on after it was stopped")
	}
}

// waitForWchan waits until process pid sleeps in the kernel function fn.
func waitForWchan(t *testing.T, pid int, fn string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "wchan"))
		if string(b) == fn {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never waited in %s (last: %q)", pid, fn, b)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestUnwindSignalBetweenAPipelinesForks: the agent may stop a command
// while the shell forks the elements of a pipeline; bash then runs the
// trap before the pipeline is complete, and the trap's first command
// waits for the last child made and takes its status. The command must
// be unwound all the same: nothing after the pipeline runs.
//
// The signal is sent as soon as the shell's first child exists, while it
// forks the other five; then, as the agent does, everything below the
// shell is killed until the shell reports. Before the trap's first
// command was a `:`, the command went on in 18 of 20 tries (load 20).
func TestUnwindSignalBetweenAPipelinesForks(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("needs bash")
	}
	for try := range 3 {
		t.Run(strconv.Itoa(try), func(t *testing.T) { stopBetweenForks(t, bash) })
	}
}

func stopBetweenForks(t *testing.T, bash string) {
	dir := t.TempDir()
	status, after := filepath.Join(dir, "status"), filepath.Join(dir, "after")
	command := "sleep 1034 | cat | cat | cat | cat | cat; echo x > " + quote(after) + "\n"
	if err := os.WriteFile(filepath.Join(dir, cmdFile), []byte(command), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, unwindFile), unwindMarker(1), 0o600); err != nil {
		t.Fatal(err)
	}
	statusLine := `command printf '%s %s\n' "$__sbx_s" ` + strings.TrimSpace(string(unwindMarker(1))) + ` >` + quote(status)
	script := unwindInit(dir) +
		"{ for __sbx_a in 1; do for __sbx_b in 1; do command . " + quote(dir+"/"+cmdFile) + "; done; done; " +
		"__sbx_s=$?; " + statusLine + "; }\n"
	cmd := exec.Command(bash, "-c", script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer func() {
		proctree.Kill(pid, 0)
		cmd.Process.Kill()
		cmd.Wait() // ECHILD if this package's reaper took it
	}()
	children := filepath.Join("/proc", strconv.Itoa(pid), "task", strconv.Itoa(pid), "children")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, _ := os.ReadFile(children); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell started no pipeline")
		}
	}
	cmd.Process.Signal(syscall.Signal(unwindSignal))
	var got []byte
	for len(got) == 0 && time.Now().Before(deadline) {
		proctree.Kill(pid, 0)
		time.Sleep(5 * time.Millisecond)
		got, _ = os.ReadFile(status)
	}
	if string(got) != "137 000000000000001\n" {
		t.Errorf("status line of the stopped command = %q, want it unwound (137)", got)
	}
	if _, err := os.Stat(after); err == nil {
		t.Error("the command ran on after the pipeline it was stopped in")
	}
}

// TestUnwindLeavesTheSavedTrapToTheShell: the user's DEBUG trap, saved in
// DIR/t while a command unwinds, is the shell's file: the agent never
// removes it (a late signal made the trap save and put back beside that
// removal, which lost the user's trap), and the shell empties it once the
// trap is back, so no trap text stays behind. Both ways a command comes,
// in its frame and from the command file.
func TestUnwindLeavesTheSavedTrapToTheShell(t *testing.T) {
	// A grace long enough for a loaded machine: what is tested is what
	// the unwinding leaves, not how fast.
	m := newTestManager(t, func(c *Config) { c.KillGrace = 3 * time.Second })
	s, _ := m.Get(Default)
	mustRun(t, s, Command{Text: "set -T; trap ': user secret' DEBUG"})
	saved := filepath.Join(s.dir, savedTrapFile)
	for _, tc := range []struct {
		name, text string
		inFrame    bool
	}{
		{"frame", "echo before; sleep 1052", true},
		{"file", "echo before; sleep 1052 # " + strings.Repeat("x", maxFrameText), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if inFrame(tc.text) != tc.inFrame {
				t.Fatalf("inFrame(%q) = %v", tc.text, !tc.inFrame)
			}
			_, err := s.Exec(context.Background(), Command{Text: tc.text, Timeout: 200 * time.Millisecond}, &capture{})
			var te *TimeoutError
			if !errors.As(err, &te) || te.ShellRestarted {
				t.Fatalf("err = %v, want a timeout that kept the shell", err)
			}
			b, err := os.ReadFile(saved)
			if err != nil {
				t.Fatalf("DIR/t after the unwinding: %v", err)
			}
			if len(b) != 0 {
				t.Errorf("DIR/t still holds %q", b)
			}
			if got := mustRun(t, s, Command{Text: "trap -p DEBUG"}); got != "trap -- ': user secret' DEBUG\n" {
				t.Errorf("the user's trap after the timeout = %q", got)
			}
		})
	}
}
