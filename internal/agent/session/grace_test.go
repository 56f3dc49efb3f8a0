package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestShellHeldOffTheCPUKeepsItsState: a timed-out command's shell that
// gets no CPU for longer than KillGrace (a loaded host; here it is stopped)
// still unwinds the command once it runs, and keeps the session's state:
// the grace counts the time it ran, not the time it waited.
//
// The command stops its own shell, so the stop certainly comes before the
// agent's signal; the test lets it go on only well after the abort began
// (the signal is pending) and KillGrace has passed.
func TestShellHeldOffTheCPUKeepsItsState(t *testing.T) {
	const grace = 300 * time.Millisecond
	m := newTestManager(t, func(c *Config) { c.KillGrace = grace })
	s, _ := m.Get(Default)
	mustRun(t, s, Command{Text: "export KEEP=me"})
	s.shMu.Lock()
	pid := s.sh.pid
	s.shMu.Unlock()
	after := filepath.Join(t.TempDir(), "after")

	heldFor := make(chan time.Duration, 1)
	go func() {
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(procState(pid), ") T ") || !signalPending(pid, unwindSignal) {
			if time.Now().After(deadline) {
				heldFor <- 0
				syscall.Kill(pid, syscall.SIGCONT)
				return
			}
			time.Sleep(time.Millisecond)
		}
		held := time.Now()
		time.Sleep(2 * grace)
		heldFor <- time.Since(held)
		syscall.Kill(pid, syscall.SIGCONT)
	}()
	_, err := s.Exec(context.Background(), Command{Text: "kill -STOP $$; sleep 1043; echo x > " + after, Timeout: 200 * time.Millisecond}, &capture{})
	if held := <-heldFor; held < grace {
		t.Skipf("the shell was not held stopped past the abort (loaded host?): %v", err)
	}
	var te *TimeoutError
	if !errors.As(err, &te) || te.ShellRestarted {
		t.Fatalf("err = %v, want a TimeoutError with the shell kept", err)
	}
	if got := mustRun(t, s, Command{Text: "echo $KEEP"}); got != "me\n" {
		t.Errorf("after the timeout: %q, want the session's state", got)
	}
	if _, err := os.Stat(after); err == nil {
		t.Error("the command went on after its timeout")
	}
}

// TestShellThatNeverUnwindsIsKilled: a command that put its own trap on
// the agent's signal cannot be unwound. Whether its shell keeps a CPU busy
// or only waits for the children the agent kills, it is killed (the state
// is lost) within the bounded grace, and nothing more of the command runs.
func TestShellThatNeverUnwindsIsKilled(t *testing.T) {
	const grace = 200 * time.Millisecond
	m := newTestManager(t, func(c *Config) { c.KillGrace = grace })
	s, _ := m.Get(Default)
	trap := "trap : " + strconv.Itoa(unwindSignal) + "; "
	for _, tt := range []struct{ name, loop string }{
		{"busy", "while :; do :; done"},
		{"waiting", "while :; do sleep 1044; done"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			after := filepath.Join(t.TempDir(), "after")
			start := time.Now()
			_, err := s.Exec(context.Background(), Command{Text: trap + tt.loop + "; echo x > " + after, Timeout: 100 * time.Millisecond}, &capture{})
			took := time.Since(start)
			var te *TimeoutError
			if !errors.As(err, &te) || !te.ShellRestarted {
				t.Fatalf("err = %v, want a TimeoutError with the shell killed", err)
			}
			// The bound plus generous room for a loaded host.
			if limit := 100*time.Millisecond + maxGraceFactor*grace + 5*time.Second; took > limit {
				t.Errorf("the command ran %v, more than %v", took, limit)
			}
			if _, err := os.Stat(after); err == nil {
				t.Error("the command went on after its timeout")
			}
			mustRun(t, s, Command{Text: "true"})
		})
	}
}

// signalPending reports whether sig waits to be delivered to process pid
// (ShdPnd in /proc/PID/status: sent to the process as a whole).
func signalPending(pid, sig int) bool {
	mask, ok := signalMask(pid, "ShdPnd")
	return ok && mask&(1<<(sig-1)) != 0
}
