package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandboxd/sandboxd/api"
)

// termConn is a test client of GET /terminal.
type termConn struct {
	t     *testing.T
	c     *websocket.Conn
	ready api.TerminalMessage
	out   strings.Builder
	exit  *int
	errs  []api.TerminalMessage
}

func dialTerminal(t *testing.T, ta *testAgent, query string) *termConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://agent/terminal?"+query, &websocket.DialOptions{
		HTTPClient: ta.client, Subprotocols: []string{api.TerminalSubprotocol},
	})
	if err != nil {
		t.Fatalf("dial terminal?%s: %v", query, err)
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != api.TerminalSubprotocol {
		t.Errorf("subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	t.Cleanup(func() { c.CloseNow() })
	tc := &termConn{t: t, c: c}
	typ, data, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText {
		t.Fatalf("first frame: %v %v", typ, err)
	}
	json.Unmarshal(data, &tc.ready)
	if tc.ready.Type != api.TerminalReady {
		t.Fatalf("first frame %s", data)
	}
	return tc
}

func (tc *termConn) send(s string) {
	tc.t.Helper()
	if err := tc.c.Write(context.Background(), websocket.MessageBinary, []byte(s)); err != nil {
		tc.t.Fatal(err)
	}
}

func (tc *termConn) control(m api.TerminalMessage) {
	tc.t.Helper()
	data, _ := json.Marshal(m)
	if err := tc.c.Write(context.Background(), websocket.MessageText, data); err != nil {
		tc.t.Fatal(err)
	}
}

// until reads frames until the output holds want, or, with want "", until
// the exit frame.
func (tc *termConn) until(want string) string {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for want == "" || !strings.Contains(tc.out.String(), want) {
		typ, data, err := tc.c.Read(ctx)
		if err != nil {
			tc.t.Fatalf("waiting for %q: %v\noutput: %q", want, err, tc.out.String())
		}
		if typ == websocket.MessageBinary {
			tc.out.Write(data)
			continue
		}
		var m api.TerminalMessage
		json.Unmarshal(data, &m)
		switch m.Type {
		case api.TerminalExit:
			tc.exit = m.ExitCode
			if want == "" {
				return tc.out.String()
			}
		case api.TerminalError:
			tc.errs = append(tc.errs, m)
		}
	}
	return tc.out.String()
}

// procStat is what /proc/PID/stat says of a process: its name, session
// and process group, and the foreground process group of its terminal.
type procStat struct {
	comm                 string
	session, pgrp, tpgid int
}

func readProcStat(pid string) (procStat, bool) {
	data, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return procStat{}, false
	}
	// "pid (comm) state ppid pgrp session tty_nr tpgid ...": comm may
	// hold spaces and parentheses, so it ends at the last ')'.
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 6 {
		return procStat{}, false
	}
	var st procStat
	st.comm = s[open+1 : end]
	for i, dst := range []*int{&st.pgrp, &st.session, nil, &st.tpgid} {
		if dst != nil {
			*dst, err = strconv.Atoi(f[2+i])
			if err != nil {
				return procStat{}, false
			}
		}
	}
	return st, true
}

// waitForeground waits until a process named comm in the session of the
// terminal whose shell is shellPID is its terminal's foreground process
// group, the one a ^C typed now reaches.
func waitForeground(t *testing.T, shellPID int, comm string) {
	t.Helper()
	shell, ok := readProcStat(strconv.Itoa(shellPID))
	if !ok {
		t.Fatalf("no process %d", shellPID)
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if st, ok := readProcStat(e.Name()); ok && st.comm == comm && st.session == shell.session && st.pgrp == st.tpgid {
				return
			}
		}
	}
	t.Fatalf("%s did not become the foreground job of session %d", comm, shell.session)
}

func TestTerminalOverWebSocket(t *testing.T) {
	ta := startAgent(t)
	// State of the default session carries into a terminal started in it.
	ta.run(t, "cd /tmp && export SESSION_ONLY=from-session")
	tc := dialTerminal(t, ta, "session=default&cols=100&rows=30")
	if tc.ready.Terminal != "default" || tc.ready.Session != "default" || !tc.ready.Created || tc.ready.PID <= 0 ||
		tc.ready.Cols != 100 || tc.ready.Rows != 30 {
		t.Errorf("ready %+v", tc.ready)
	}
	tc.send("echo \"[$TERM|$SESSION_ONLY|$SANDBOX_TEST_VAR|$(pwd)|$(stty size)]\"\r")
	tc.until("[xterm-256color|from-session|base|/tmp|30 100]")
	if strings.Contains(tc.out.String(), PrivateEnvPrefix) {
		t.Error("the agent's private variables reached the terminal")
	}

	// Resize reaches the program (stty asks the kernel).
	tc.control(api.TerminalMessage{Type: api.TerminalResize, Cols: 120, Rows: 40})
	tc.send("stty size\r")
	tc.until("40 120")

	// Bad control messages are answered, not fatal.
	tc.control(api.TerminalMessage{Type: "launch-missiles"})
	tc.c.Write(context.Background(), websocket.MessageText, []byte("not json"))
	tc.control(api.TerminalMessage{Type: api.TerminalResize, Cols: 0, Rows: 5000})
	tc.send("echo alive-$((2*21))\r")
	tc.until("alive-42")
	if len(tc.errs) != 3 {
		t.Errorf("error frames: %+v", tc.errs)
	}

	// Ctrl-C interrupts the foreground program, not the shell.
	// The ^C is sent once sleep is the terminal's foreground job: sent
	// earlier (a loaded machine), it would reach the shell instead, or
	// flush the line before the shell read it, and sleep would run on.
	tc.send("sleep 1000\r")
	waitForeground(t, tc.ready.PID, "sleep")
	tc.send("\x03")
	tc.send("echo after-interrupt-$((5+5))\r")
	tc.until("after-interrupt-10")

	// A second client attaches to the same terminal and sees the replay.
	other := dialTerminal(t, ta, "session=default")
	if other.ready.Created {
		t.Error("second client started a new shell")
	}
	other.until("alive-42")
	other.send("exit 3\r")
	tc.until("")
	other.until("")
	for _, c := range []*termConn{tc, other} {
		if c.exit == nil || *c.exit != 3 {
			t.Errorf("exit frame: %v", c.exit)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _, err := c.c.Read(ctx)
		cancel()
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Errorf("after exit: %v, want a normal closure", err)
		}
	}
}

// Input that arrives after the shell exited, as the CLI's Ctrl-D at the
// end of piped input does, is dropped: the client still gets the exit.
func TestTerminalInputAfterTheShellExitedKeepsTheExitFrame(t *testing.T) {
	ta := startAgent(t)
	for i := range 5 {
		tc := dialTerminal(t, ta, "session=default")
		tc.send("exit 4\r")
		typing := make(chan struct{})
		go func() {
			defer close(typing)
			for tc.c.Write(context.Background(), websocket.MessageBinary, []byte{4}) == nil {
			}
		}()
		tc.until("")
		if tc.exit == nil || *tc.exit != 4 {
			t.Fatalf("attempt %d: exit frame %v, want 4", i, tc.exit)
		}
		tc.c.CloseNow()
		<-typing
	}
}

func TestTerminalRequestsAreValidated(t *testing.T) {
	ta := startAgent(t)
	for _, q := range []string{
		"cols=0", "rows=1001", "cols=abc", "session=../x", "terminal=a%2Fb", "shell=bash", "shell=/nope/sh",
		"idleTimeout=-1", "idleTimeout=999999999999", "unknown=1", "cols=80&cols=90",
	} {
		req, _ := http.NewRequest("GET", "http://agent/terminal?"+q, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		resp, err := ta.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || e.Code != api.CodeValidationFailed {
			t.Errorf("%s: %d %+v", q, resp.StatusCode, e)
		}
	}
	// Not a WebSocket.
	resp, err := ta.client.Get("http://agent/terminal")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("plain GET: %d", resp.StatusCode)
	}
	// An unknown session.
	req, _ := http.NewRequest("GET", "http://agent/terminal?"+url.Values{"session": {"nosuch"}}.Encode(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	resp, err = ta.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("unknown session: %d", resp.StatusCode)
	}
}

func TestTerminalListAndClose(t *testing.T) {
	ta := startAgent(t)
	tc := dialTerminal(t, ta, "terminal=work&shell=/bin/sh")
	tc.send("echo up\r")
	tc.until("up")
	resp, err := ta.client.Get("http://agent/terminals")
	if err != nil {
		t.Fatal(err)
	}
	var list api.TerminalList
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Terminals) != 1 || list.Terminals[0].ID != "work" || list.Terminals[0].Shell != "/bin/sh" || list.Terminals[0].Clients != 1 {
		t.Fatalf("list %+v", list)
	}
	req, _ := http.NewRequest("DELETE", "http://agent/terminals/work", nil)
	resp, err = ta.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Errorf("close: %d", resp.StatusCode)
	}
	tc.until("")
	if tc.exit == nil {
		t.Error("no exit frame after close")
	}
	req, _ = http.NewRequest("DELETE", "http://agent/terminals/work", nil)
	resp, err = ta.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("close again: %d", resp.StatusCode)
	}
}

func TestTerminalOfAUserSessionRunsAsTheUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a session as another user")
	}
	ta := startAgent(t)
	os.Chmod(filepath.Dir(ta.workspace), 0o755) // the temp dir, for the user to reach its home
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "dev", User: "coder"}, nil)
	ta.runIn(t, "dev", "cd ~ && export IN_DEV=yes")
	tc := dialTerminal(t, ta, "session=dev")
	tc.send("echo \"<$(id -u) $IN_DEV $(pwd)>\"; test -O $(tty) && echo owns-$((1+1))-tty\r")
	out := tc.until("owns-2-tty")
	want := "<" + uidOf(t, ta, "coder") + " yes "
	if !strings.Contains(out, want) || !strings.Contains(out, "/home/coder>") {
		t.Errorf("terminal of a user session: %q, want %q...", out, want)
	}
}
