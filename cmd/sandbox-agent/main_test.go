package main

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

var agentBin string

// TestMain builds the real, static agent binary once.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sandbox-agent-test")
	if err != nil {
		panic(err)
	}
	agentBin = filepath.Join(dir, "sandbox-agent")
	build := exec.Command("go", "build", "-o", agentBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the agent: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(agentBin, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" {
		t.Errorf("--version: %q, %v", out, err)
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--no-such-flag"}} {
		cmd := exec.Command(agentBin, args...)
		if err := cmd.Run(); cmd.ProcessState.ExitCode() != 2 {
			t.Errorf("%q: exit %d (%v), want 2", args, cmd.ProcessState.ExitCode(), err)
		}
	}
}

// TestStaticAndSmall keeps the agent's promises: a static binary built
// without cgo that links no database, image or HTTP framework module.
func TestStaticAndSmall(t *testing.T) {
	f, err := elf.Open(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the agent is dynamically linked (%s)", p.Type)
		}
	}
	bi, err := buildinfo.ReadFile(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range bi.Settings {
		if s.Key == "CGO_ENABLED" && s.Value != "0" {
			t.Errorf("built with CGO_ENABLED=%s", s.Value)
		}
	}
	allowed := map[string]bool{
		"golang.org/x/sys": true, "golang.org/x/sync": true,
		// (Not esbuild: the code interpreter's TypeScript transpiler is a
		// helper of its own, sandbox-transpile, started on the first cell
		// that needs it: linked here it cost every agent start about
		// 1 ms of package initialisers and 120 KB of heap.)
		// Terminals: the PTY and its WebSocket. Pure Go, no cgo (+0.2 MB).
		"github.com/creack/pty": true, "github.com/coder/websocket": true,
	}
	for _, dep := range bi.Deps {
		if !allowed[dep.Path] {
			t.Errorf("the agent links %s; it must stay small (allowed: %v)", dep.Path, allowed)
		}
	}
}

// agentProc is the real agent binary serving on a temp socket.
type agentProc struct {
	cmd    *exec.Cmd
	client *http.Client
	dir    string
	log    *strings.Builder
	exited chan struct{}
}

// startBinary starts the agent binary, behind wrapper (a command line
// that ends by running its arguments) if one is given.
func startBinary(t *testing.T, wrapper ...string) *agentProc {
	t.Helper()
	dir, err := os.MkdirTemp("", "agb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	argv := append(wrapper, agentBin, "--socket", sock, "--run-dir", filepath.Join(dir, "run"),
		"--workspace", filepath.Join(dir, "ws"), "--cgroup-root", filepath.Join(dir, "cgroup"), "--state-dir", filepath.Join(dir, "state"), "--log-level", "debug")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SANDBOX_VAR=from-sandbox", "SANDBOXD_AGENT_PRIVATE=x"}
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ap := &agentProc{cmd: cmd, dir: dir, log: &strings.Builder{}, exited: make(chan struct{})}
	logDone := make(chan struct{})
	go func() { io.Copy(ap.log, stderr); close(logDone) }()
	go func() { <-logDone; cmd.Wait(); close(ap.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-ap.exited
		if t.Failed() {
			t.Logf("agent log:\n%s", ap.log.String())
		}
	})
	ap.client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := ap.client.Get("http://agent/internal/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ap
}

func (ap *agentProc) exec(t *testing.T, command string) api.ExecResult {
	t.Helper()
	return ap.execIn(t, "", command)
}

// execIn runs command in session ("": the default one).
func (ap *agentProc) execIn(t *testing.T, session, command string) api.ExecResult {
	t.Helper()
	body, _ := json.Marshal(api.ExecRequest{Command: command, SessionID: session})
	resp, err := ap.client.Post("http://agent/exec", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res api.ExecResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("exec %q: status %d, %v", command, resp.StatusCode, err)
	}
	return res
}

func TestServeAndShutDown(t *testing.T) {
	ap := startBinary(t)
	resp, err := ap.client.Get("http://agent/internal/health")
	if err != nil {
		t.Fatal(err)
	}
	var h api.AgentHealth
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h.ProtocolVersion != api.ProtocolVersion || h.PID != ap.cmd.Process.Pid {
		t.Errorf("health = %+v", h)
	}
	res := ap.exec(t, `echo "$SANDBOX_VAR ${SANDBOXD_AGENT_PRIVATE-hidden} $(pwd)"; sleep 1060 & echo $!`)
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	if len(lines) != 2 || lines[0] != "from-sandbox hidden "+filepath.Join(ap.dir, "ws") {
		t.Fatalf("stdout %q", res.Stdout)
	}
	bg, _ := strconv.Atoi(lines[1])

	if err := ap.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ap.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit after SIGTERM")
	}
	if code := ap.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	// Shutting down killed the session, with its background job.
	deadline := time.Now().Add(3 * time.Second)
	for alive(bg) {
		if time.Now().After(deadline) {
			t.Fatalf("background job %d survived the agent", bg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(ap.dir, "agent.sock")); err == nil {
		t.Error("socket left behind")
	}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	i := strings.LastIndexByte(line, ')')
	return i > 0 && i+2 < len(line) && line[i+2] != 'Z'
}

func TestSpawnSubcommand(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "unified"), 0o755)
	os.WriteFile(filepath.Join(root, "unified", "cgroup.procs"), nil, 0o644)
	out, err := exec.Command(agentBin, "spawn", "--cgroup-root", root, "--", "/bin/sh", "-c", "echo $$").Output()
	if err != nil {
		t.Fatal(err)
	}
	procs, _ := os.ReadFile(filepath.Join(root, "unified", "cgroup.procs"))
	if strings.TrimSpace(string(out)) != string(procs) {
		t.Errorf("program ran as %q, cgroup.procs got %q", out, procs)
	}
}

// TestAsPID1 runs the agent as init of a new PID namespace, as in a
// sandbox: it must reap the orphans re-parented to it, kill command trees,
// and exit cleanly on SIGTERM.
func TestAsPID1(t *testing.T) {
	ap := startAsPID1(t)
	resp, err := ap.client.Get("http://agent/internal/health")
	if err != nil {
		t.Fatal(err)
	}
	var h api.AgentHealth
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if h.PID != 1 {
		t.Fatalf("agent PID %d in its namespace, want 1", h.PID)
	}
	for range 20 {
		ap.exec(t, "(sleep 0.01 &); (true &); sh -c 'sleep 0.01 &'")
	}
	time.Sleep(300 * time.Millisecond)
	// Zombies anywhere in the namespace (the agent's /proc is the
	// namespace's own).
	zombies := ap.exec(t, `for f in /proc/[0-9]*/stat; do read -r l < "$f" 2>/dev/null || continue; s=${l##*) }; [ "${s%% *}" = Z ] && echo "$l"; done; true`)
	if zombies.Stdout != "" {
		t.Errorf("zombies left:\n%s", zombies.Stdout)
	}
	// A timeout kills the command's tree inside the namespace.
	body, _ := json.Marshal(api.ExecRequest{Command: "sleep 1070 & sleep 1070", Timeout: 200})
	resp, err = ap.client.Post("http://agent/exec", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("timeout: status %d", resp.StatusCode)
	}
	if left := ap.exec(t, `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f" 2>/dev/null | grep -q '^sleep 1070' && echo "$f"; done; true`).Stdout; left != "" {
		t.Errorf("sleeps left after the timeout: %q", left)
	}

	// SIGTERM from outside the namespace reaches init because it handles it.
	agentPID := childOf(t, ap.cmd.Process.Pid)
	if err := syscall.Kill(agentPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ap.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit after SIGTERM")
	}
	if code := ap.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if !strings.Contains(ap.log.String(), "agent shutting down") {
		t.Errorf("no orderly shutdown in the log:\n%s", ap.log.String())
	}
}

// TestAsPID1StraySignalsDoNothing: root in a sandbox can send its agent
// (PID 1) any signal, since Go handles them all; those the daemon never
// sends must do nothing, where they ended the agent (HUP, INT) or crashed
// it (QUIT, ABRT, ILL, TRAP, BUS, FPE, SEGV, STKFLT, SYS), and every
// session and process with it. The same agent answers afterwards, with
// its session's state.
func TestAsPID1StraySignalsDoNothing(t *testing.T) {
	ap := startAsPID1(t)
	agentPID := childOf(t, ap.cmd.Process.Pid)
	ap.exec(t, "stray=kept")
	for _, sig := range []string{"HUP", "INT", "QUIT", "ABRT", "ILL", "TRAP", "BUS", "FPE", "SEGV", "STKFLT", "SYS", "PIPE", "USR1", "ALRM"} {
		res := ap.exec(t, "kill -s "+sig+" 1 && sleep 0.2 && echo $stray")
		if strings.TrimSpace(res.Stdout) != "kept" || res.ExitCode != 0 {
			t.Errorf("kill -s %s 1: exit %d, stdout %q, stderr %q", sig, res.ExitCode, res.Stdout, res.Stderr)
		}
		if !alive(agentPID) {
			t.Fatalf("the agent ended on SIG%s", sig)
		}
	}
	if got := strings.TrimSpace(ap.exec(t, "echo $stray").Stdout); got != "kept" {
		t.Errorf("the session lost its state: %q", got)
	}
	// SIGTERM, the daemon's, still stops it in order.
	ap.exec(t, "(sleep 0.2; kill -s TERM 1) >/dev/null 2>&1 &")
	select {
	case <-ap.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not exit after SIGTERM from inside")
	}
}

// startAsPID1 starts the agent binary as init of a new PID namespace.
func startAsPID1(t *testing.T) *agentProc {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (a new PID namespace)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1)")
	}
	return startBinary(t, unshare, "--pid", "--fork", "--mount-proc", "--kill-child")
}

// childOf returns the only child of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("children of %d: %q", pid, b)
	}
	child, _ := strconv.Atoi(f[0])
	return child
}

// TestProgramsInheritNoSignalState: an agent started with every signal
// ignored and some blocked (what a runtime would pass on of nohup's
// ignored SIGHUP or a supervisor's mask) starts its programs with none:
// the default session's shell, which as PID 1 it starts without the spawn
// wrapper, and a new session's, started through it.
func TestProgramsInheritNoSignalState(t *testing.T) {
	if exec.Command("env", "--ignore-signal", "--block-signal", "true").Run() != nil {
		t.Skip("needs GNU env with --ignore-signal and --block-signal (coreutils 8.31)")
	}
	env := []string{"env", "--ignore-signal", "--block-signal=HUP,INT,USR1,ALRM,TERM,WINCH"}
	t.Run("process", func(t *testing.T) { checkSignalState(t, startBinary(t, env...)) })
	t.Run("pid1", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root (a new PID namespace)")
		}
		unshare, err := exec.LookPath("unshare")
		if err != nil {
			t.Skip("no unshare(1)")
		}
		checkSignalState(t, startBinary(t, append([]string{unshare, "--pid", "--fork", "--mount-proc", "--kill-child"}, env...)...))
	})
}

func checkSignalState(t *testing.T, ap *agentProc) {
	const state = "grep -E '^Sig(Blk|Ign):' /proc/self/status | tr -d '\\t' | tr '\\n' ' '"
	const want = "SigBlk:0000000000000000 SigIgn:0000000000000000"
	if got := strings.TrimSpace(ap.exec(t, state).Stdout); got != want {
		t.Errorf("a command of the default session: %q, want %q", got, want)
	}
	body, _ := json.Marshal(api.CreateSessionRequest{ID: "other"})
	resp, err := ap.client.Post("http://agent/sessions", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("creating a session: %s", resp.Status)
	}
	res := ap.execIn(t, "other", state)
	if got := strings.TrimSpace(res.Stdout); got != want {
		t.Errorf("a command of a new session: %q, want %q", got, want)
	}
}
