package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agent/proctree"
	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/user"
)

func TestMain(m *testing.M) { agenttest.Main(m) }

// testAgent is an agent served in-process on a unix socket in a temp dir.
type testAgent struct {
	client    *http.Client
	workspace string
	agent     *Agent
}

func startAgent(t testing.TB, tweak ...func(*Config)) *testAgent {
	t.Helper()
	// Socket paths are limited to 108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "agt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ws := filepath.Join(dir, "workspace")
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	cfg := Config{
		StateDir:   filepath.Join(dir, "state"),
		Users:      &user.DB{Etc: testEtc(t, dir), HomeRoot: filepath.Join(dir, "home")},
		RunDir:     runDir(t),
		Workspace:  ws,
		CgroupRoot: filepath.Join(dir, "cgroup"),
		Env:        []string{"SANDBOX_TEST_VAR=base", PrivateEnvPrefix + "SECRET=no"},
		Version:    "test",
		Reaper:     agenttest.Reaper(t),
		Log:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	// The grace is the shell's time to unwind a stopped command (a trap,
	// then a return per function or sourced file): bounded work, but at
	// load 25 on two vCPUs it took the shell more than 300 ms, and the
	// tests that expect the session's state kept then saw it killed.
	cfg.Sessions.KillGrace = 2 * time.Second
	for _, f := range tweak {
		f(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "a.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	})
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 16,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &testAgent{client: &http.Client{Transport: tr}, workspace: ws, agent: a}
}

// testEtc makes an /etc with the host image's accounts for the agent's
// user database: tests must never edit the host's own /etc/passwd.
func testEtc(t testing.TB, dir string) string {
	etc := filepath.Join(dir, "etc")
	os.MkdirAll(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "shadow"), []byte("root:*:19000:0:99999:7:::\n"), 0o640)
	return etc
}

// runDir is a private directory on a tmpfs, as /run is in a sandbox:
// FIFOs and small files on a disk file system cost a journal write each.
func runDir(t testing.TB) string {
	parent := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	dir, err := os.MkdirTemp(parent, "agent-run")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// post sends body to path and returns the status and raw response body.
func (ta *testAgent) post(t testing.TB, path string, body any) (int, []byte) {
	t.Helper()
	var data []byte
	switch b := body.(type) {
	case string:
		data = []byte(b)
	case []byte:
		data = b
	default:
		var err error
		if data, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := ta.client.Post("http://agent"+path, "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s response: %v", path, err)
	}
	return resp.StatusCode, out
}

// exec runs req and expects a 200 result.
func (ta *testAgent) exec(t testing.TB, req api.ExecRequest) api.ExecResult {
	t.Helper()
	status, body := ta.post(t, "/exec", req)
	if status != http.StatusOK {
		t.Fatalf("exec %q: status %d: %s", req.Command, status, body)
	}
	var res api.ExecResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("decoding result: %v: %s", err, body)
	}
	return res
}

// run is exec of a plain command, returning stdout.
func (ta *testAgent) run(t testing.TB, command string) string {
	t.Helper()
	res := ta.exec(t, api.ExecRequest{Command: command})
	if res.ExitCode != 0 {
		t.Fatalf("%q exited %d; stderr: %s", command, res.ExitCode, res.Stderr)
	}
	return res.Stdout
}

// execError runs req and expects an API error.
func (ta *testAgent) execError(t testing.TB, req api.ExecRequest, wantStatus int, wantCode api.Code) api.Error {
	t.Helper()
	status, body := ta.post(t, "/exec", req)
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decoding error: %v: %s", err, body)
	}
	if status != wantStatus || e.Code != wantCode {
		t.Fatalf("exec %q: got %d %s (%s), want %d %s", req.Command, status, e.Code, e.Message, wantStatus, wantCode)
	}
	return e
}

type timedEvent struct {
	api.ExecEvent
	at time.Time
}

// stream runs req on /exec/stream and collects the events with their
// arrival times.
func (ta *testAgent) stream(t testing.TB, ctx context.Context, req api.ExecRequest) []timedEvent {
	t.Helper()
	resp := ta.openStream(t, ctx, req)
	defer resp.Body.Close()
	var events []timedEvent
	r := sse.NewReader(resp.Body)
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return events
		}
		if err != nil {
			t.Fatalf("reading stream: %v", err)
		}
		var e api.ExecEvent
		if err := ev.Decode(&e); err != nil {
			t.Fatalf("decoding event: %v", err)
		}
		if e.Type != ev.Name {
			t.Fatalf("event named %q carries type %q", ev.Name, e.Type)
		}
		events = append(events, timedEvent{e, time.Now()})
	}
}

func (ta *testAgent) openStream(t testing.TB, ctx context.Context, req api.ExecRequest) *http.Response {
	t.Helper()
	data, _ := json.Marshal(req)
	hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/exec/stream", bytes.NewReader(data))
	resp, err := ta.client.Do(hr)
	if err != nil {
		t.Fatalf("POST /exec/stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), sse.ContentType) {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("stream: status %d: %s", resp.StatusCode, body)
	}
	return resp
}

// checkStreamShape checks the stream grammar: start, output, exactly one
// terminal event at the end.
func checkStreamShape(t testing.TB, events []timedEvent) {
	t.Helper()
	if len(events) < 2 || events[0].Type != api.EventStart {
		t.Fatalf("stream does not open with start: %+v", events)
	}
	for i, ev := range events[1 : len(events)-1] {
		if ev.Type != api.EventStdout && ev.Type != api.EventStderr {
			t.Fatalf("event %d is %q, want output", i+1, ev.Type)
		}
	}
	if last := events[len(events)-1]; !api.IsTerminal(last.Type) {
		t.Fatalf("stream ends with %q", last.Type)
	}
}

// collectStream concatenates the decoded data of one stream's events.
func collectStream(t testing.TB, events []timedEvent, typ string) []byte {
	t.Helper()
	var out []byte
	for _, ev := range events {
		if ev.Type != typ {
			continue
		}
		if ev.Encoding == api.EncodingBase64 {
			b, err := base64.StdEncoding.DecodeString(ev.Data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b...)
		} else {
			out = append(out, ev.Data...)
		}
	}
	return out
}

// processesMatching lists this test process's live (non-zombie)
// descendants whose command line contains marker. Only descendants: the
// same tests run by someone else on the host (the same `sleep 1020`), or
// left over from a killed run, are not this run's. Nothing this run starts
// escapes the tree: the test process is a child subreaper (see
// agenttest.Reaper), so orphans come back to it.
func processesMatching(t testing.TB, marker string) []int {
	t.Helper()
	procs, err := proctree.Descendants(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/cmdline")
		if err != nil || !strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), marker) {
			continue
		}
		if state(p.PID) == 'Z' {
			continue
		}
		pids = append(pids, p.PID)
	}
	return pids
}

// state is the process state letter from /proc/PID/stat.
func state(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// eventually polls cond for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readRaw reads an SSE body line by line, for tests that look at comments.
func readRaw(r io.Reader, line func(string) bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if !line(sc.Text()) {
			return
		}
	}
}

// runViaReaper runs a program to its end through the test process's one
// reaper and returns its stdout and exit code. Tests of this package must
// not use exec.Cmd's Wait: the shared reaper, once running, would take the
// child's status from it (ECHILD).
func runViaReaper(t *testing.T, name string, args ...string) (string, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout = w
	done := make(chan reaper.Status, 1)
	_, err = agenttest.Reaper(t).Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	}, func(st reaper.Status) { done <- st })
	w.Close()
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	out, _ := io.ReadAll(r)
	st := <-done
	return string(out), st.ExitCode()
}
