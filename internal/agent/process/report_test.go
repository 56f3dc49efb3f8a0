package process

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoginProcessReportsItsStatus: a process the fork server forked
// reports its status once its command returned (reportScript), and the
// record ends as the process's exit would have ended it: the same status,
// all the output written before, nothing printed by the report, and no
// report (the reaper's status) where the shell exits on its own or has an
// EXIT trap to run.
func TestLoginProcessReportsItsStatus(t *testing.T) {
	runDir := t.TempDir()
	m := newManager(t, Config{RunDir: runDir})
	// A home of the test's own: the host's profile may run anything.
	o := StartOptions{Login: true, Cwd: "/tmp", Env: []string{"PATH=/usr/bin:/bin", "HOME=" + runDir}}
	if !m.PrepareLogin(t.Context(), o) {
		t.Fatal("no fork server")
	}
	bigTrap := "trap \": " + strings.Repeat("x", 100<<10) + "\" EXIT; true"
	for _, c := range []struct {
		name, cmd      string
		status         Status
		code           int
		stdout, stderr string
		reports        bool // may report: the reaper's status can come first
	}{
		{"output", "echo out; echo err >&2", Completed, 0, "out\n", "err\n", true},
		{"false", "false", Failed, 1, "", "", true},
		{"exit", "echo a; exit 3", Failed, 3, "a\n", "", false},
		{"exit trap", "trap 'echo bye' EXIT; echo hi", Completed, 0, "hi\nbye\n", "", false},
		{"exit trap exits", "trap 'echo bye; exit 7' EXIT; true", Failed, 7, "bye\n", "", false},
		{"exit trap on stderr", "trap 'echo bye >&2' EXIT; false", Failed, 1, "", "bye\n", false},
		{"exit trap of 100 KiB", bigTrap, Completed, 0, "", "", false},
		{"SIGKILL", "echo a; kill -KILL $BASHPID", Killed, 137, "a\n", "", false},
		{"SIGTERM", "kill -TERM $BASHPID", Killed, 143, "", "", false},
		{"exec", "exec true", Completed, 0, "", "", false},
		{"closed fds", "exec 1>&- 2>&- 3>&- 4>&- 5>&- 9>&-; (exit 4)", Failed, 4, "", "", true},
		{"fds of its own", "exec 3>/dev/null 9>&1 {fd}>&2; echo out >&9; echo err >&$fd", Completed, 0, "out\n", "err\n", true},
		// ++: the command runs in an eval.
		{"xtrace", "set -x; true", Completed, 0, "", "++ true\n", true},
		{"xtrace to stdout", "set -x; BASH_XTRACEFD=1; true", Completed, 0, "++ true\n", "++ BASH_XTRACEFD=1\n", true},
		{"errexit", "set -e; false; echo not", Failed, 1, "", "", false},
		{"nounset", "set -u; unset BASHPID; (exit 5)", Failed, 5, "", "", false},
		{"debug and return traps", "trap 'echo dbg' DEBUG; trap 'echo ret' RETURN; true", Completed, 0, "dbg\ndbg\n", "", true},
		{"shadowed builtins", "printf() { echo p; }; trap() { echo t; }; return() { echo r; }; (exit 6)", Failed, 6, "", "", true},
		{"huge output", "head -c 1000000 /dev/zero | tr '\\0' x; printf '%*s' 300000 y", Completed, 0, strings.Repeat("x", 1000000) + strings.Repeat(" ", 299999) + "y", "", true},
		{"junk on its status FIFO", "printf 'x\\n' 1<>" + m.forkDir + "/$BASHPID.st; exit 8", Failed, 8, "", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := o
			o.Command, o.CloseStdin = c.cmd, true
			before := m.reports.Load()
			p, err := m.Start(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			info := waitDone(t, p)
			if info.Status != c.status || info.ExitCode == nil || *info.ExitCode != c.code {
				t.Errorf("record %+v, want status %s, exit code %d", info, c.status, c.code)
			}
			if out, errOut := readLog(t, p, Stdout), readLog(t, p, Stderr); out != c.stdout || errOut != c.stderr {
				t.Errorf("stdout %.80q (%d bytes), stderr %q; want %.80q (%d bytes), %q", out, len(out), errOut, c.stdout, len(c.stdout), c.stderr)
			}
			if reported := m.reports.Load() != before; reported && !c.reports {
				t.Errorf("the process reported a status; it must not")
			}
		})
	}
	// Statuses are reported: of several commands that may report, at
	// least one did before the reaper had the exit.
	before := m.reports.Load()
	for range 5 {
		o := o
		o.Command, o.CloseStdin = "true", true
		p, err := m.Start(t.Context(), o)
		if err != nil {
			t.Fatal(err)
		}
		waitDone(t, p)
	}
	if m.reports.Load() == before {
		t.Error("no login process reported its status")
	}
}

// TestReportedEndLeavesBackgroundChildren: a command that leaves a child
// holding its stdout ends when its shell reports, with what it wrote.
func TestReportedEndLeavesBackgroundChildren(t *testing.T) {
	runDir := t.TempDir()
	m := newManager(t, Config{RunDir: runDir})
	o := StartOptions{Login: true, Cwd: "/tmp", Env: []string{"PATH=/usr/bin:/bin", "HOME=" + runDir}}
	if !m.PrepareLogin(t.Context(), o) {
		t.Fatal("no fork server")
	}
	o.Command, o.CloseStdin = "(sleep 1043; echo late) & echo now", true
	p, err := m.Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(-p.Info().PID, unix.SIGKILL) })
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("a background child held the command's end")
	}
	if info := p.Info(); info.Status != Completed || readLog(t, p, Stdout) != "now\n" {
		t.Errorf("record %+v, stdout %q", info, readLog(t, p, Stdout))
	}
}
