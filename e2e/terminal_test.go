package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// termReader collects a Terminal's output in the background.
type termReader struct {
	mu   sync.Mutex
	buf  strings.Builder
	done chan error
}

func readTerminal(t *client.Terminal) *termReader {
	r := &termReader{done: make(chan error, 1)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := t.Read(b)
			r.mu.Lock()
			r.buf.Write(b[:n])
			r.mu.Unlock()
			if err != nil {
				r.done <- err
				return
			}
		}
	}()
	return r
}

func (r *termReader) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

func (r *termReader) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(r.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("terminal output lacks %q:\n%s", want, r.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTerminalThroughTheDaemon(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("term")
		run(t, sb, "cd /tmp && export FROM_SESSION=yes")
		ctx := ctxT(t, 2*time.Minute)

		term, err := sb.Terminal(ctx, client.TerminalOptions{Session: "default", Cols: 90, Rows: 20})
		if err != nil {
			t.Fatal(err)
		}
		info := term.Info()
		if info.Terminal != "default" || !info.Created || info.PID <= 1 {
			t.Errorf("ready %+v", info)
		}
		out := readTerminal(term)
		io.WriteString(term, "echo \"<$TERM $FROM_SESSION $(pwd) $(stty size)>\"\r")
		out.waitFor(t, "<xterm-256color yes /tmp 20 90>")
		if err := term.Resize(132, 43); err != nil {
			t.Fatal(err)
		}
		io.WriteString(term, "stty size\r")
		out.waitFor(t, "43 132")
		// The shell runs in the user cgroup, like every user program.
		io.WriteString(term, "echo \"cg:$(cat /proc/self/cgroup)\"\r")
		out.waitFor(t, "cg:")

		// Detach; the shell lives on. A new client gets the recent screen and
		// shares the terminal with a third.
		term.Close()
		list, err := sb.Terminals(ctx)
		if err != nil || len(list) != 1 || list[0].ID != "default" {
			t.Fatalf("terminals after detach: %+v %v", list, err)
		}
		again, err := sb.Terminal(ctx, client.TerminalOptions{Session: "default"})
		if err != nil {
			t.Fatal(err)
		}
		if again.Info().Created {
			t.Error("attach started a new shell")
		}
		againOut := readTerminal(again)
		againOut.waitFor(t, "43 132")
		third, err := sb.Terminal(ctx, client.TerminalOptions{Session: "default"})
		if err != nil {
			t.Fatal(err)
		}
		thirdOut := readTerminal(third)
		io.WriteString(third, "echo from-third-$((40+2))\r")
		againOut.waitFor(t, "from-third-42")
		thirdOut.waitFor(t, "from-third-42")

		// The shell's exit ends every client with its status.
		io.WriteString(again, "exit 9\r")
		for _, c := range []*client.Terminal{again, third} {
			code, err := c.Wait(ctx)
			if err != nil || code != 9 {
				t.Errorf("exit: %d %v", code, err)
			}
		}
		if err := <-againOut.done; !errors.Is(err, io.EOF) {
			t.Errorf("read after exit: %v", err)
		}

		// Errors come back before any output.
		if _, err := sb.Terminal(ctx, client.TerminalOptions{Session: "nosuch"}); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("unknown session: %v", err)
		}
		if _, err := sb.Terminal(ctx, client.TerminalOptions{Shell: "/bin/nonexistent"}); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("missing shell: %v", err)
		}
		if err := sb.CloseTerminal(ctx, "nosuch"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("close unknown: %v", err)
		}
		// Without the token: refused.
		anon, _ := client.New(d.URL)
		if _, err := anon.Sandbox("term").Terminal(ctx, client.TerminalOptions{}); !errors.Is(err, client.ErrUnauthorized) {
			t.Errorf("terminal without a token: %v", err)
		}
	})
}

func TestTerminalIdleTimeout(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("term-idle")
	ctx := ctxT(t, time.Minute)
	term, err := sb.Terminal(ctx, client.TerminalOptions{ID: "short", IdleTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	out := readTerminal(term)
	io.WriteString(term, "echo $$ > /tmp/shell.pid; echo ok\r")
	out.waitFor(t, "ok")
	term.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := sb.Terminals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle terminal still there: %+v", list)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _ := exitOf(t, sb, "kill -0 $(cat /tmp/shell.pid)"); code == 0 {
		t.Error("the idle terminal's shell still runs")
	}
}

// tmux drives `sandbox shell` in a real terminal.
type tmux struct {
	t      *testing.T
	socket string
	target string
}

func startTmux(t *testing.T, cols, rows int, command string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (apt-get install tmux)")
	}
	tm := &tmux{t: t, socket: fmt.Sprintf("sbdtest%d", os.Getpid()), target: "shell"}
	tm.run("new-session", "-d", "-s", tm.target, "-x", fmt.Sprint(cols), "-y", fmt.Sprint(rows), command)
	t.Cleanup(func() { exec.Command("tmux", "-L", tm.socket, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// keys types literal text (no key names).
func (tm *tmux) keys(text string) { tm.run("send-keys", "-t", tm.target, "-l", text) }

// key sends named keys (Enter, C-c, Escape...).
func (tm *tmux) key(names ...string) {
	tm.run(append([]string{"send-keys", "-t", tm.target}, names...)...)
}

func (tm *tmux) screen() string { return tm.run("capture-pane", "-p", "-t", tm.target) }

func (tm *tmux) waitFor(want string) string {
	tm.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := tm.screen()
		if strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("screen lacks %q:\n%s", want, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestShellCommandInTmux(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("tmux")
	run(t, sb, "true") // created and running
	bin := filepath.Join(testdaemon.BinDir(t), "sandbox")
	script := filepath.Join(t.TempDir(), "run.sh")
	// After the CLI exits, show its status and whether the terminal is
	// back in cooked mode (icanon, not -icanon).
	os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/sh
export SANDBOX_URL=%s SANDBOX_TOKEN=%s
%s shell tmux
echo "EXITED:$?"
echo "MODE:$(stty -a | tr ' ' '\n' | grep -x -e icanon -e -icanon)"
sleep 600
`, d.URL, d.Token, bin)), 0o755)
	tm := startTmux(t, 100, 30, script)
	tm.waitFor("root@tmux:/workspace#")

	tm.keys("echo hello-$((6*7))-tmux")
	tm.key("Enter")
	tm.waitFor("hello-42-tmux")

	// The window size, and a resize, reach the sandbox.
	tm.keys("stty size")
	tm.key("Enter")
	tm.waitFor("30 100")
	tm.run("resize-window", "-t", tm.target, "-x", "120", "-y", "35")
	time.Sleep(300 * time.Millisecond)
	tm.keys("clear; stty size")
	tm.key("Enter")
	tm.waitFor("35 120")

	// Ctrl-C interrupts the remote program, not the CLI.
	tm.keys("clear; sleep 1000")
	tm.key("Enter")
	time.Sleep(300 * time.Millisecond)
	tm.key("C-c")
	tm.keys("echo after-ctrl-c")
	tm.key("Enter")
	tm.waitFor("after-ctrl-c")

	// The python3 REPL, with Ctrl-C inside it.
	tm.keys("clear; python3 -q")
	tm.key("Enter")
	tm.waitFor(">>>")
	tm.keys("print(6*7, 'from', 'python')")
	tm.key("Enter")
	tm.waitFor("42 from python")
	tm.key("C-c")
	tm.waitFor("KeyboardInterrupt")
	tm.keys("exit()")
	tm.key("Enter")

	// top draws a full screen and quits on q. It may discard keys typed
	// while it sets the terminal up, so q is repeated until it is gone;
	// Ctrl-U then drops any q that reached the shell.
	tm.keys("clear; top -d 0.5; echo top-exit-$((1+1))")
	tm.key("Enter")
	tm.waitFor("load average")
	for i := 0; !strings.Contains(tm.screen(), "top-exit-2"); i++ {
		if i == 50 {
			t.Fatalf("top did not quit on q:\n%s", tm.screen())
		}
		tm.keys("q")
		time.Sleep(200 * time.Millisecond)
	}
	tm.key("C-u")

	// vi: insert text, save, quit; the file has it.
	if _, err := os.Stat("/usr/bin/vi"); err == nil {
		tm.keys("clear; vi /tmp/from-vi.txt; echo \"<$(cat /tmp/from-vi.txt)>\"")
		tm.key("Enter")
		tm.waitFor("[New") // vi's status line: it runs and reads keys
		tm.keys("iwritten in vi")
		tm.key("Escape")
		tm.keys(":wq")
		tm.key("Enter")
		tm.waitFor("<written in vi>")
	}

	// exit: the CLI returns the shell's status and restores the terminal.
	tm.keys("exit 5")
	tm.key("Enter")
	tm.waitFor("EXITED:5")
	tm.waitFor("MODE:")
	if screen := tm.screen(); !strings.Contains(screen, "MODE:icanon") {
		t.Errorf("terminal not restored to cooked mode:\n%s", screen)
	}
}

// The CLI also works with input that is not a terminal.
func TestShellCommandWithPipedInput(t *testing.T) {
	d := daemon(t)
	bin := filepath.Join(testdaemon.BinDir(t), "sandbox")
	cmd := exec.CommandContext(ctxT(t, time.Minute), bin, "shell", "piped", "--terminal", "scripted")
	cmd.Env = append(os.Environ(), "SANDBOX_URL="+d.URL, "SANDBOX_TOKEN="+d.Token)
	cmd.Stdin = strings.NewReader("echo piped-$((2+3))\nexit 4\n")
	out, err := cmd.Output()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 4 || !strings.Contains(string(out), "piped-5") {
		t.Errorf("err %v, output %q", err, out)
	}
}
