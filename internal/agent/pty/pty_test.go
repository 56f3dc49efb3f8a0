package pty

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
)

func TestMain(m *testing.M) { agenttest.Main(m) }

// fakeClock fires idle timers when the test says so.
type fakeClock struct {
	mu     sync.Mutex
	timers []*fakeTimer
}

type fakeTimer struct {
	f       func()
	stopped bool
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// fire runs every timer that is not stopped, and reports how many.
func (c *fakeClock) fire() int {
	c.mu.Lock()
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped {
			t.stopped = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
	return len(due)
}

func newManager(t *testing.T, tweak func(*Config)) *Manager {
	t.Helper()
	cfg := Config{Reaper: agenttest.Reaper(t), CgroupRoot: filepath.Join(t.TempDir(), "cgroup"), HangupGrace: 500 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Shutdown)
	return m
}

func shellOptions(id string) Options {
	return Options{ID: id, Shell: "/bin/sh", Env: []string{"PATH=/usr/bin:/bin", "PS1=$ ", "TERM=xterm-256color"},
		Dir: "/", Cols: 80, Rows: 24, IdleTimeout: time.Hour}
}

// readUntil collects c's output until it contains want.
func readUntil(t *testing.T, c *Client, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		chunk, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %q: %v; got %q", want, err, out.String())
		}
		out.Write(chunk)
	}
	return out.String()
}

// waitExit reads c until the terminal's exit.
func waitExit(t *testing.T, c *Client) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out strings.Builder
	for {
		chunk, err := c.Next(ctx)
		var exit *ExitError
		if errors.As(err, &exit) {
			return exit.Code, out.String()
		}
		if err != nil {
			t.Fatalf("waiting for the exit: %v; got %q", err, out.String())
		}
		out.Write(chunk)
	}
}

func TestTerminalRunsAShellOnAPTY(t *testing.T) {
	m := newManager(t, nil)
	c, created, err := m.Attach(shellOptions("t1"), nil)
	if err != nil || !created {
		t.Fatalf("attach: %v %v", created, err)
	}
	c.Write([]byte("tty; echo TERM=$TERM; stty size; echo done-$((6*7))\n"))
	out := readUntil(t, c, "done-42")
	for _, want := range []string{"/dev/pts/", "TERM=xterm-256color", "24 80"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if err := c.Resize(132, 50); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("stty size\n"))
	readUntil(t, c, "50 132")
	if info := c.Info(); info.Cols != 132 || info.Rows != 50 || info.Clients != 1 {
		t.Errorf("info %+v", info)
	}
	c.Write([]byte("exit 7\n"))
	if code, _ := waitExit(t, c); code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
	if l := m.List(); len(l) != 0 {
		t.Errorf("terminal still listed after its exit: %+v", l)
	}
}

func TestClientsShareATerminalAndGetTheReplay(t *testing.T) {
	m := newManager(t, nil)
	a, _, err := m.Attach(shellOptions("shared"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Write([]byte("echo first-$((1+1))\n"))
	readUntil(t, a, "first-2")
	a.Detach()

	b, created, err := m.Attach(shellOptions("shared"), nil)
	if err != nil || created {
		t.Fatalf("second attach: %v %v", created, err)
	}
	c, _, err := m.Attach(shellOptions("shared"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Both get the replay first...
	readUntil(t, b, "first-2")
	readUntil(t, c, "first-2")
	// ...and both see what either types.
	c.Write([]byte("echo second-$((2+1))\n"))
	readUntil(t, b, "second-3")
	readUntil(t, c, "second-3")
	if info := b.Info(); info.Clients != 2 {
		t.Errorf("clients = %d", info.Clients)
	}
	// Another session cannot take the ID.
	o := shellOptions("shared")
	o.Session = "other"
	if _, _, err := m.Attach(o, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("attach from another session: %v", err)
	}
}

func TestReplayIsBounded(t *testing.T) {
	m := newManager(t, func(c *Config) { c.ReplayBytes = 8 << 10 })
	a, _, err := m.Attach(shellOptions("big"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Write([]byte("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; echo end-$((0))\n"))
	readUntil(t, a, "end-0")
	a.Detach()
	b, _, err := m.Attach(shellOptions("big"), nil)
	if err != nil {
		t.Fatal(err)
	}
	chunk, err := b.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(chunk) > 8<<10 || !strings.Contains(string(chunk), "line-1999") || strings.Contains(string(chunk), "line-10\r") {
		t.Errorf("replay of %d bytes: %.80q...", len(chunk), chunk)
	}
	if !strings.HasPrefix(string(chunk), "line-") {
		t.Errorf("replay does not start at a line: %.40q", chunk)
	}
}

// A replay of more than 4 KiB that lost nothing starts with the
// terminal's first output: a client that attaches again sees all of it.
func TestReplayThatLostNothingIsWhole(t *testing.T) {
	m := newManager(t, nil)
	a, _, err := m.Attach(shellOptions("whole"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Write([]byte("echo first-$((1+1)); i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); done; echo end-$((0))\n"))
	first := readUntil(t, a, "end-0")
	a.Detach()
	if len(first) < 4096 {
		t.Fatalf("only %d bytes of output", len(first))
	}
	b, _, err := m.Attach(shellOptions("whole"), nil)
	if err != nil {
		t.Fatal(err)
	}
	replay := readUntil(t, b, "end-0")
	if !strings.HasPrefix(replay, first) {
		t.Errorf("replay of %d bytes does not start with the terminal's first output:\n got %.80q\nwant %.80q", len(replay), replay, first)
	}
}

func TestReplayBufferStartsAtALineOnlyWhenCutInOne(t *testing.T) {
	line := strings.Repeat("x", 99) + "\n"
	for _, tc := range []struct {
		name   string
		chunks []string
		max    int
		want   string
	}{
		{name: "small", chunks: []string{"$ ", "ls\r\n"}, max: 8 << 10, want: "$ ls\r\n"},
		{name: "4 KiB or more, nothing cut", chunks: []string{"$ echo", strings.Repeat(line, 60)}, max: 8 << 10,
			want: "$ echo" + strings.Repeat(line, 60)},
		{name: "cut inside a line", chunks: []string{"\x1b[1mA\n", strings.Repeat(line, 10)}, max: 10*100 + 3,
			want: strings.Repeat(line, 10)},
		{name: "cut at a line", chunks: []string{"head\n", strings.Repeat(line, 3), "tail"}, max: 3*100 + 4,
			want: strings.Repeat(line, 3) + "tail"},
		{name: "cut, no line in the first 4 KiB", chunks: []string{"a", strings.Repeat("y", 5000), "\nz"}, max: 5002,
			want: strings.Repeat("y", 5000) + "\nz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r replayBuffer
			for _, c := range tc.chunks {
				r.add([]byte(c), tc.max)
			}
			if got := string(r.snapshot()); got != tc.want {
				t.Errorf("replay of %d bytes %.60q..., want %d bytes %.60q...", len(got), got, len(tc.want), tc.want)
			}
		})
	}
}

func TestSlowClientIsCutOffNotTheShell(t *testing.T) {
	m := newManager(t, func(c *Config) { c.ClientQueueBytes = 16 << 10 })
	slow, _, err := m.Attach(shellOptions("flood"), nil)
	if err != nil {
		t.Fatal(err)
	}
	fast, _, err := m.Attach(shellOptions("flood"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The flood pauses briefly every 100 lines, so that a client that reads
	// along keeps up even on a busy machine; the slow one never reads and
	// falls 16 KiB behind.
	fast.Write([]byte("i=0; while [ $i -lt 3000 ]; do echo flood-line-$i; i=$((i+1)); [ $((i % 100)) -eq 0 ] && sleep 0.01; done; echo fin-$((1))\n"))
	// The fast client reads along and sees the end: the shell was never
	// held back by the slow one.
	readUntil(t, fast, "fin-1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := slow.Next(ctx); !errors.Is(err, ErrOverflow) {
		t.Errorf("slow client: %v, want ErrOverflow", err)
	}
}

func TestIdleTerminalIsHungUpOnlyWithoutClients(t *testing.T) {
	clock := &fakeClock{}
	m := newManager(t, func(c *Config) { c.Clock = clock })
	a, _, err := m.Attach(shellOptions("idle"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a.Write([]byte("echo up\n"))
	readUntil(t, a, "up")
	a.Detach()
	// A client comes back before the idle time is over: the timer is
	// stopped and the shell lives.
	b, created, err := m.Attach(shellOptions("idle"), nil)
	if err != nil || created {
		t.Fatalf("reattach: %v %v", created, err)
	}
	if n := clock.fire(); n != 0 {
		t.Errorf("%d idle timers still armed with a client attached", n)
	}
	b.Write([]byte("echo still-$((3*3))\n"))
	readUntil(t, b, "still-9")
	b.Detach()
	if n := clock.fire(); n != 1 {
		t.Fatalf("%d idle timers fired, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(m.List()) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle terminal was not hung up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The same ID now starts a new shell.
	c, created, err := m.Attach(shellOptions("idle"), nil)
	if err != nil || !created {
		t.Fatalf("attach after hangup: %v %v", created, err)
	}
	c.Detach()
}

func TestLimits(t *testing.T) {
	m := newManager(t, func(c *Config) { c.MaxTerminals = 2; c.MaxClients = 2 })
	for _, id := range []string{"a", "b"} {
		if _, _, err := m.Attach(shellOptions(id), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := m.Attach(shellOptions("c"), nil); !errors.Is(err, ErrLimit) {
		t.Errorf("third terminal: %v", err)
	}
	if _, _, err := m.Attach(shellOptions("a"), nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Attach(shellOptions("a"), nil); !errors.Is(err, ErrClients) {
		t.Errorf("third client: %v", err)
	}
	if err := m.Close("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("close unknown: %v", err)
	}
}

func TestCloseHangsUpAndReportsTheExit(t *testing.T) {
	m := newManager(t, nil)
	c, _, err := m.Attach(shellOptions("bye"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A foreground job that ignores nothing: the hangup ends it too.
	c.Write([]byte("echo ready; sleep 1000\n"))
	// The output after the prompt, not the terminal's echo of the line:
	// the shell runs it.
	readUntil(t, c, " ready\r\n")
	if err := m.Close("bye"); err != nil {
		t.Fatal(err)
	}
	code, _ := waitExit(t, c)
	if code != 128+1 { // SIGHUP
		t.Errorf("exit code %d, want %d", code, 129)
	}
}

func TestPrepareRunsOnlyForANewTerminal(t *testing.T) {
	m := newManager(t, nil)
	calls := 0
	prepare := func(o *Options) error {
		calls++
		o.Env = append(o.Env, "PREPARED=yes")
		return nil
	}
	c, _, err := m.Attach(shellOptions("prep"), prepare)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("echo got-$PREPARED\n"))
	readUntil(t, c, "got-yes")
	if _, _, err := m.Attach(shellOptions("prep"), prepare); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("prepare ran %d times", calls)
	}
	boom := errors.New("boom")
	if _, _, err := m.Attach(shellOptions("other"), func(*Options) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("failed prepare: %v", err)
	}
}
