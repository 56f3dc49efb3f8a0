package session

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
)

// capture is an Output that keeps everything.
type capture struct {
	began          int
	stdout, stderr bytes.Buffer
}

func (c *capture) Begin() { c.began++ }
func (c *capture) Write(s Stream, p []byte) error {
	if s == Stderr {
		c.stderr.Write(p)
	} else {
		c.stdout.Write(p)
	}
	return nil
}

func newTestManager(t *testing.T, tweak ...func(*Config)) *Manager {
	t.Helper()
	cfg := Config{
		RunDir:     runDir(t),
		Workspace:  t.TempDir(),
		CgroupRoot: filepath.Join(t.TempDir(), "none"),
		BaseEnv:    []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"},
		Reaper:     agenttest.Reaper(t),
		Log:        slog.New(slog.DiscardHandler),
		KillGrace:  200 * time.Millisecond,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// runDir is a private directory on a tmpfs, as /run is in a sandbox.
func runDir(t *testing.T) string {
	parent := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	dir, err := os.MkdirTemp(parent, "session-run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func mustRun(t *testing.T, s *Session, cmd Command) string {
	t.Helper()
	c := &capture{}
	res, err := s.Exec(context.Background(), cmd, c)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%q: exit %d, err %v, stderr %q", cmd.Text, res.ExitCode, err, c.stderr.String())
	}
	if c.began != 1 {
		t.Errorf("Begin called %d times", c.began)
	}
	return c.stdout.String()
}

// TestPOSIXShellFallback runs the generated code in dash, the /bin/sh of
// Debian, as in an image without bash.
func TestPOSIXShellFallback(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	m := newTestManager(t, func(c *Config) { c.Shell = "/bin/sh" })
	s, _ := m.Get(Default)
	mustRun(t, s, Command{Text: "export KEEP=1; V=plain; cd /tmp; f() { echo f$1; }"})
	got := mustRun(t, s, Command{Text: `echo "$KEEP $V $X $(pwd)"; f 2; cd /`, Env: map[string]string{"X": "x'y", "V": "call"}, Cwd: "/usr"})
	if want := "1 call x'y /usr\nf2\n"; got != want {
		t.Errorf("with env and cwd: %q, want %q", got, want)
	}
	if got := mustRun(t, s, Command{Text: `echo "$KEEP $V ${X-unset} $(pwd)"`}); got != "1 plain unset /tmp\n" {
		t.Errorf("after: %q", got)
	}
	if got := mustRun(t, s, Command{Text: "cat", Stdin: []byte("in")}); got != "in" {
		t.Errorf("stdin: %q", got)
	}
	c := &capture{}
	res, err := s.Exec(context.Background(), Command{Text: "echo partial; if"}, c)
	if err != nil || res.ExitCode == 0 {
		t.Errorf("syntax error: exit %d err %v", res.ExitCode, err)
	}
	mustRun(t, s, Command{Text: "true"}) // a syntax error does not end the shell

	// sh has no DEBUG trap to unwind a command with: a timeout kills the
	// shell, so that nothing more of the command runs.
	after := filepath.Join(t.TempDir(), "after")
	_, err = s.Exec(context.Background(), Command{Text: "sleep 1040; echo x > " + after, Timeout: 200 * time.Millisecond}, &capture{})
	var te *TimeoutError
	if !errors.As(err, &te) || !te.ShellRestarted {
		t.Errorf("timeout in sh: %v, want a TimeoutError with ShellRestarted", err)
	}
	mustRun(t, s, Command{Text: "true"})
	if _, err := os.Stat(after); err == nil {
		t.Error("the command went on after its timeout")
	}
}

func TestNamedSessionsAreIsolated(t *testing.T) {
	m := newTestManager(t)
	dir := t.TempDir()
	other, err := m.Create("build", Options{Env: map[string]string{"MODE": "prod"}, Cwd: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("build", Options{}); !errors.Is(err, ErrExists) {
		t.Errorf("second create: %v", err)
	}
	def, _ := m.Get(Default)
	mustRun(t, def, Command{Text: "export SHARED=no; cd /"})
	if got := mustRun(t, other, Command{Text: `echo "$MODE ${SHARED-unset} $(pwd)"`}); got != "prod unset "+dir+"\n" {
		t.Errorf("named session: %q", got)
	}
	// A fresh shell after exit keeps the session's options.
	other.Exec(context.Background(), Command{Text: "exit"}, &capture{})
	if got := mustRun(t, other, Command{Text: `echo "$MODE $(pwd)"`}); got != "prod "+dir+"\n" {
		t.Errorf("after restart: %q", got)
	}
	if err := m.Delete("build"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get("build"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
}

func TestShellKilledBetweenCommands(t *testing.T) {
	m := newTestManager(t)
	s, _ := m.Get(Default)
	mustRun(t, s, Command{Text: "true"})
	s.shMu.Lock()
	pid := s.sh.pid
	s.shMu.Unlock()
	syscall.Kill(pid, syscall.SIGKILL)
	// Right away (the reaper may not have noticed yet) and later.
	if got := mustRun(t, s, Command{Text: "echo alive"}); got != "alive\n" {
		t.Errorf("got %q", got)
	}
}

// TestShellDiedWithTheFrameUnsourced: a shell killed while it waits can
// still take a frame that arrives before it dies (here the test takes it
// from the pipe, the shell stopped). It never read the command file, so
// the command never ran and runs in a fresh shell.
func TestShellDiedWithTheFrameUnsourced(t *testing.T) {
	m := newTestManager(t)
	s, _ := m.Get(Default)
	mustRun(t, s, Command{Text: "true"}) // the first command shows the access time kept
	mustRun(t, s, Command{Text: "true"})
	s.shMu.Lock()
	sh := s.sh
	s.shMu.Unlock()
	syscall.Kill(sh.pid, syscall.SIGSTOP)
	// Stopped for sure: a shell still in its read when the frame came
	// would take it before it stopped.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(procState(sh.pid), ") T "); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shell did not stop")
		}
	}
	got := make(chan string, 1)
	go func() { got <- mustRunErr(s, Command{Text: "echo alive"}) }()
	for deadline := time.Now().Add(10 * time.Second); sh.unread() < bashFrameLen; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no frame was sent")
		}
	}
	frame := make([]byte, bashFrameLen)
	if n, err := syscall.Read(sh.inPeek, frame); n != bashFrameLen || err != nil {
		t.Fatalf("taking the frame: %d %v", n, err)
	}
	syscall.Kill(sh.pid, syscall.SIGKILL)
	if out := <-got; out != "alive\n" {
		t.Errorf("got %q, want the command run in a fresh shell", out)
	}
}

// mustRunErr runs cmd and returns its stdout, or the error's text.
func mustRunErr(s *Session, cmd Command) string {
	c := &capture{}
	if _, err := s.Exec(context.Background(), cmd, c); err != nil {
		return err.Error()
	}
	return c.stdout.String()
}

func TestSpawnFailureIsReported(t *testing.T) {
	m := newTestManager(t, func(c *Config) {
		c.CgroupRoot = t.TempDir()
		os.MkdirAll(filepath.Join(c.CgroupRoot, "memory", "cgroup.procs"), 0o755)
	})
	s, _ := m.Get(Default)
	_, err := s.Exec(context.Background(), Command{Text: "true"}, &capture{})
	if err == nil || !strings.Contains(err.Error(), "joining cgroup") {
		t.Errorf("err = %v, want the wrapper's cgroup error", err)
	}
}

func TestCloseEndsRunningAndQueuedCommands(t *testing.T) {
	m := newTestManager(t)
	s, _ := m.Get(Default)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := s.Exec(context.Background(), Command{Text: "sleep 1040"}, &capture{})
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	m.Close()
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrTerminated) && !errors.Is(err, ErrClosed) {
				t.Errorf("err = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("command still running after Close")
		}
	}
}

func TestWrapperScriptRejectsBadNames(t *testing.T) {
	for _, name := range []string{"", "1A", "A-B", "A;B", "A B", "A=B"} {
		if _, err := wrapperScript("/x", map[string]string{name: "v"}, "", nil); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	if _, err := wrapperScript("/x", map[string]string{"OK_1": "v"}, "/tmp", []envChange{{"P", new("x")}, {"U", nil}}); err != nil {
		t.Error(err)
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"default": true, "a": true, "build-1.x_y": true, strings.Repeat("a", 64): true,
		"": false, ".": false, "..": false, "-a": false, "a/b": false, "a b": false, strings.Repeat("a", 65): false,
	} {
		if ValidID(id) != want {
			t.Errorf("ValidID(%q) = %v", id, !want)
		}
	}
}

// procState is /proc/PID/stat: "PID (COMM) STATE ...".
func procState(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return string(b)
}

// TestCommandFileHoldsNoTextBetweenCommands: a command's text is gone
// from DIR/cmd when its answer comes (blanked with zeros, see
// commandFile), a shorter text after a longer one runs alone, and what
// user code appended to the file is never sourced with the next text.
func TestCommandFileHoldsNoTextBetweenCommands(t *testing.T) {
	m := newTestManager(t)
	s, _ := m.Get(Default)
	path := filepath.Join(s.dir, cmdFile)
	onlyZeros := func(when string) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.Trim(b, "\x00")) != 0 {
			t.Errorf("%s: %s holds %q", when, path, b)
		}
	}
	// Texts too long for a frame: they go through the file.
	pad := " #" + strings.Repeat("x", maxFrameText)
	if got := mustRun(t, s, Command{Text: "echo secret-$((6*7))-" + strings.Repeat("s", 64) + pad + pad}); !strings.HasPrefix(got, "secret-42-") {
		t.Fatalf("long command: %q", got)
	}
	onlyZeros("after a command")
	shorter := "echo a" + pad
	if got := mustRun(t, s, Command{Text: shorter}); got != "a\n" {
		t.Errorf("shorter command after a longer one: %q", got)
	}
	onlyZeros("after a shorter command")

	// The appender's own text comes in its frame.
	appender := "printf '\\necho INJECTED; #" + strings.Repeat("x", 40) + "\\n' >>" + path
	mustRun(t, s, Command{Text: appender})
	next := "echo " + strings.Repeat("n", len(shorter)) // longer than the text before, shorter than the file
	if got := mustRun(t, s, Command{Text: next}); got != strings.Repeat("n", len(shorter))+"\n" {
		t.Errorf("after user code appended to the command file: %q", got)
	}
	onlyZeros("after the command that followed an append")
}
