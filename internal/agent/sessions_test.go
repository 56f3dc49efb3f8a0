package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

func (ta *testAgent) runIn(t testing.TB, session, command string) string {
	t.Helper()
	res := ta.exec(t, api.ExecRequest{Command: command, SessionID: session})
	if res.ExitCode != 0 {
		t.Fatalf("%s: %q exited %d: %s", session, command, res.ExitCode, res.Stderr)
	}
	return strings.TrimSpace(res.Stdout)
}

func TestSessionsCRUDAndIsolation(t *testing.T) {
	ta := startAgent(t)
	var s api.Session
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "build", Env: map[string]string{"ROLE": "build"}, Cwd: "/tmp"}, &s)
	if s.ID != "build" || s.Cwd != "/tmp" || len(s.Env) != 1 || s.Env[0] != "ROLE" {
		t.Errorf("created %+v", s)
	}
	ta.mustCall(t, 201, "POST", "/sessions", nil, &s)
	if !strings.HasPrefix(s.ID, "session-") || s.Cwd != ta.workspace {
		t.Errorf("generated %+v", s)
	}
	ta.callError(t, api.CodeSessionExists, "POST", "/sessions", api.CreateSessionRequest{ID: "build"})
	ta.callError(t, api.CodeValidationFailed, "POST", "/sessions", api.CreateSessionRequest{ID: "../x"})
	ta.callError(t, api.CodeValidationFailed, "POST", "/sessions", map[string]any{"id": "x", "bogus": 1})
	ta.callError(t, api.CodeValidationFailed, "POST", "/sessions", api.CreateSessionRequest{ID: "x", User: "Bad:User"})

	// What is isolated: env, cwd, functions, aliases.
	ta.runIn(t, "default", "export ONLY_DEFAULT=1; cd /; f() { echo fn; }; alias al='echo al'")
	if got := ta.runIn(t, "build", `echo "[$ONLY_DEFAULT][$ROLE]"; pwd; type f >/dev/null 2>&1 || echo nofn; alias al 2>/dev/null || echo noalias`); got != "[][build]\n/tmp\nnofn\nnoalias" {
		t.Errorf("build sees %q", got)
	}
	// What is shared: files and processes.
	shared := filepath.Join(t.TempDir(), "shared")
	ta.runIn(t, "build", "echo shared > "+shared)
	if got := ta.runIn(t, "default", "cat "+shared); got != "shared" {
		t.Errorf("default reads %q from the file build wrote", got)
	}
	p := ta.start(t, api.StartProcessRequest{Command: "sleep 100", SessionID: "build"})
	var list api.ProcessList
	ta.mustCall(t, 200, "GET", "/processes", nil, &list)
	if len(list.Processes) != 1 || list.Processes[0].SessionID != "build" {
		t.Errorf("processes seen from the API: %+v", list)
	}

	var sl api.SessionList
	ta.mustCall(t, 200, "GET", "/sessions", nil, &sl)
	if len(sl.Sessions) != 3 || sl.Sessions[0].ID != "build" || sl.Sessions[1].ID != "default" {
		t.Errorf("list %+v", sl)
	}
	// Deleting kills what runs in it, its processes included.
	ta.callError(t, api.CodeSessionProtected, "DELETE", "/sessions/default", nil)
	ta.mustCall(t, 204, "DELETE", "/sessions/build", nil, nil)
	var got api.Process
	ta.mustCall(t, 200, "GET", "/processes/"+p.ID, nil, &got)
	if got.Status != api.ProcessKilled || got.StatusReason != "session deleted" {
		t.Errorf("process of a deleted session: %+v", got)
	}
	ta.callError(t, api.CodeSessionNotFound, "GET", "/sessions/build", nil)
	ta.callError(t, api.CodeSessionNotFound, "DELETE", "/sessions/build", nil)
	ta.callError(t, api.CodeSessionNotFound, "POST", "/exec", api.ExecRequest{Command: "true", SessionID: "build"})
}

func TestSessionsRunInParallelAndSerialiseWithin(t *testing.T) {
	ta := startAgent(t)
	for _, id := range []string{"a", "b"} {
		ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: id}, nil)
	}
	// Each command notes when it ran in a file of its own, so the test
	// judges order by what happened rather than by how long it took
	// (which a loaded machine stretches).
	dir := t.TempDir()
	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := []string{"a", "b"}[i%2]
			span := fmt.Sprintf("%s/%d", dir, i)
			outs[i] = ta.runIn(t, id, "date +%s%N > "+span+"; for n in 1 2 3; do echo "+id+"$n; sleep 0.1; done; date +%s%N >> "+span)
		}()
	}
	wg.Wait()
	spans := make([][2]int64, 4)
	for i, out := range outs {
		id := []string{"a", "b"}[i%2]
		if out != id+"1\n"+id+"2\n"+id+"3" {
			t.Errorf("output mixed: %q", out)
		}
		b, err := os.ReadFile(fmt.Sprintf("%s/%d", dir, i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Sscan(string(b), &spans[i][0], &spans[i][1]); err != nil {
			t.Fatalf("span %d: %q: %v", i, b, err)
		}
	}
	overlap := func(x, y [2]int64) bool { return x[0] < y[1] && y[0] < x[1] }
	// Commands 0 and 2 ran in session a, 1 and 3 in b.
	if overlap(spans[0], spans[2]) || overlap(spans[1], spans[3]) {
		t.Errorf("two commands of one session overlapped: %v", spans)
	}
	if !overlap(spans[0], spans[1]) && !overlap(spans[0], spans[3]) && !overlap(spans[2], spans[1]) && !overlap(spans[2], spans[3]) {
		t.Errorf("the two sessions never ran at once: %v", spans)
	}
	// A background process never blocks an exec.
	ta.start(t, api.StartProcessRequest{Command: "sleep 100", SessionID: "a"})
	if got := ta.runIn(t, "a", "echo free"); got != "free" {
		t.Errorf("exec beside a process: %q", got)
	}
}

func TestEnvPrecedenceAndUnset(t *testing.T) {
	ta := startAgent(t) // image env: SANDBOX_TEST_VAR=base
	ta.mustCall(t, 200, "POST", "/env", api.SetEnvRequest{Env: map[string]*string{
		"SANDBOX_TEST_VAR": new("sandbox"), "LEVEL": new("sandbox"), "SECRET": new("s3cret")}}, nil)
	// The default session takes sandbox env at once, before its next command.
	if got := ta.runIn(t, "default", `echo "$SANDBOX_TEST_VAR $LEVEL $SECRET"`); got != "sandbox sandbox s3cret" {
		t.Errorf("default after setEnvVars: %q", got)
	}
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "app", Env: map[string]string{"LEVEL": "session"}}, nil)
	ta.mustCall(t, 200, "POST", "/sessions/app/env", api.SetEnvRequest{Env: map[string]*string{"SECRET": nil}}, nil)
	if got := ta.runIn(t, "app", `echo "$SANDBOX_TEST_VAR $LEVEL [${SECRET-unset}]"`); got != "sandbox session [unset]" {
		t.Errorf("session layer: %q", got)
	}
	res := ta.exec(t, api.ExecRequest{Command: `echo "$LEVEL"`, SessionID: "app", Env: map[string]string{"LEVEL": "command"}})
	if strings.TrimSpace(res.Stdout) != "command" {
		t.Errorf("per-command: %q", res.Stdout)
	}
	// Processes get the same layering, and per-process env on top.
	p := ta.start(t, api.StartProcessRequest{Command: `echo "$SANDBOX_TEST_VAR $LEVEL [${SECRET-unset}]"`, SessionID: "app"})
	ta.waitExit(t, p.ID)
	var logs api.ProcessLogs
	ta.mustCall(t, 200, "GET", "/processes/"+p.ID+"/logs", nil, &logs)
	if strings.TrimSpace(logs.Stdout) != "sandbox session [unset]" {
		t.Errorf("process env: %q", logs.Stdout)
	}
	// Sessions created earlier keep their environment.
	ta.mustCall(t, 200, "POST", "/env", api.SetEnvRequest{Env: map[string]*string{"LATE": new("1"), "LEVEL": nil}}, nil)
	if got := ta.runIn(t, "app", `echo "[${LATE-}] $LEVEL"`); got != "[] session" {
		t.Errorf("older session saw a later sandbox change: %q", got)
	}
	if got := ta.runIn(t, "default", `echo "[${LATE-}] [${LEVEL-unset}]"`); got != "[1] [unset]" {
		t.Errorf("default after unset: %q", got)
	}
	var info api.EnvInfo
	ta.mustCall(t, 200, "GET", "/env", nil, &info)
	if strings.Join(info.Env, ",") != "LATE,SANDBOX_TEST_VAR,SECRET" || strings.Join(info.Unset, ",") != "LEVEL" {
		t.Errorf("env info %+v", info)
	}
	ta.callError(t, api.CodeValidationFailed, "POST", "/env", api.SetEnvRequest{Env: map[string]*string{"BAD-NAME": new("x")}})
	ta.callError(t, api.CodeInvalidJSON, "POST", "/env", map[string]any{"env": map[string]any{"X": 1}})
}

// environOf reads a process's /proc/PID/environ. A process in the middle
// of an execve (a started process's bash becoming `sleep`) reads empty for
// a moment: the file holds the memory it had when opened, which the exec
// lets go of, and the new image's environment is set after the kernel
// switched to it. An empty read is tried again, for up to 5 s.
func environOf(pid string) string {
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile("/proc/" + pid + "/environ")
		if len(b) > 0 || time.Now().After(deadline) {
			return string(b)
		}
	}
}

func TestSecretsStayInTheirSession(t *testing.T) {
	ta := startAgent(t)
	secret := "tok-" + strings.Repeat("z", 12)
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "agent", Env: map[string]string{"API_KEY": secret}}, nil)
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "app"}, nil)
	ta.runIn(t, "agent", "true")
	ta.start(t, api.StartProcessRequest{Command: "sleep 100", SessionID: "agent"})
	appShell := ta.runIn(t, "app", "echo $$")
	child := ta.start(t, api.StartProcessRequest{Command: "sleep 100", SessionID: "app", Env: map[string]string{"OTHER": "x"}})
	time.Sleep(50 * time.Millisecond)
	for _, pid := range []string{appShell, strconv.Itoa(child.PID)} {
		if env := environOf(pid); env == "" || strings.Contains(env, secret) {
			t.Errorf("pid %s of session app: environ has the secret (or is unreadable): %q", pid, env)
		}
	}
	// Per-command secrets do not stay in the shell or its files.
	ta.exec(t, api.ExecRequest{Command: "true", SessionID: "app", Env: map[string]string{"ONCE": secret}})
	if env := environOf(appShell); strings.Contains(env, secret) {
		t.Error("per-command secret in the shell's environ")
	}
	filepath.Walk(ta.agent.cfg.RunDir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if b, _ := os.ReadFile(path); strings.Contains(string(b), secret) {
				t.Errorf("%s holds the secret after the command", path)
			}
		}
		return nil
	})
	// And the agent's environment never has it.
	if strings.Contains(environOf("self"), secret) {
		t.Error("the agent's own environ has the secret")
	}
}

func TestNonRootSessionUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a session as another user")
	}
	ta := startAgent(t)
	os.Chmod(filepath.Dir(ta.workspace), 0o755) // the temp dir, for the user to reach its home
	secret := "root-only-" + strings.Repeat("q", 8)
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "rootish", Env: map[string]string{"ROOT_SECRET": secret}}, nil)
	ta.runIn(t, "rootish", "true")
	rootShell := ta.runIn(t, "rootish", "echo $$")
	var s api.Session
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "dev", User: "coder"}, &s)
	if s.User != "coder" {
		t.Errorf("session %+v", s)
	}
	// (The test's account database is not the host's, so names are
	// compared through it.)
	got := ta.runIn(t, "dev", `echo $USER; id -u; echo $HOME; test -d "$HOME" && test -O "$HOME" && echo ownhome`)
	lines := strings.Split(got, "\n")
	if len(lines) != 4 || lines[0] != "coder" || lines[1] != uidOf(t, ta, "coder") || !strings.HasSuffix(lines[2], "/home/coder") || lines[3] != "ownhome" {
		t.Fatalf("user session: %q", got)
	}
	// It cannot reach what is root's: another session's environ, the
	// agent's directories, the state file.
	probes := map[string]string{
		"root session environ": "cat /proc/" + rootShell + "/environ",
		"agent environ":        "cat /proc/" + strconv.Itoa(os.Getpid()) + "/environ",
		"run dir listing":      "ls " + ta.agent.cfg.RunDir,
		"default session dir":  "ls " + ta.agent.cfg.RunDir + "/default",
		"state file":           "cat " + ta.agent.cfg.StateDir + "/state.json",
		"become root":          "su -c true root </dev/null",
	}
	for what, cmd := range probes {
		res := ta.exec(t, api.ExecRequest{Command: cmd, SessionID: "dev"})
		if res.ExitCode == 0 || strings.Contains(res.Stdout, secret) {
			t.Errorf("%s: the user could (exit %d): %q", what, res.ExitCode, res.Stdout)
		}
	}
	// Processes of the session run as the user too, or as one named.
	p := ta.start(t, api.StartProcessRequest{Command: "id -u", SessionID: "dev"})
	q := ta.start(t, api.StartProcessRequest{Command: "id -u", User: "other"})
	for id, want := range map[string]string{p.ID: uidOf(t, ta, "coder"), q.ID: uidOf(t, ta, "other")} {
		ta.waitExit(t, id)
		var logs api.ProcessLogs
		ta.mustCall(t, 200, "GET", "/processes/"+id+"/logs", nil, &logs)
		if strings.TrimSpace(logs.Stdout) != want {
			t.Errorf("process %s ran as %q, want %s", id, logs.Stdout, want)
		}
	}
	passwd, _ := os.ReadFile(filepath.Join(filepath.Dir(ta.workspace), "etc", "passwd"))
	if strings.Count(string(passwd), "\ncoder:x:") != 1 {
		t.Errorf("passwd:\n%s", passwd)
	}
}

func TestStateSurvivesAnAgentRestart(t *testing.T) {
	state := t.TempDir()
	ta := startAgent(t, func(c *Config) { c.StateDir = state })
	ta.mustCall(t, 200, "POST", "/env", api.SetEnvRequest{Env: map[string]*string{"SBX": new("kept")}}, nil)
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "s1", Env: map[string]string{"S1": "one"}, Cwd: "/tmp", CommandTimeout: 5000}, nil)
	ta.mustCall(t, 200, "POST", "/sessions/default/env", api.SetEnvRequest{Env: map[string]*string{"DEF": new("d")}}, nil)
	done := ta.start(t, api.StartProcessRequest{Command: "echo finished", ProcessID: "done"})
	ta.waitExit(t, done.ID)
	ta.start(t, api.StartProcessRequest{Command: "sleep 100", ProcessID: "alive"})
	// A crash: the agent dies without its shutdown (Close is not called;
	// its processes are killed by hand, as the container's end would).
	ta.mustCall(t, 200, "DELETE", "/processes", api.KillProcessRequest{Signal: "KILL"}, nil)
	var before api.Process
	ta.mustCall(t, 200, "GET", "/processes/alive", nil, &before)
	// Make the record say running again, as a crash would leave it.
	var b []byte
	eventually(t, 5*time.Second, "the kill to be saved", func() bool {
		b, _ = os.ReadFile(filepath.Join(state, "state.json"))
		return strings.Count(string(b), `"killed"`) == 1
	})
	os.WriteFile(filepath.Join(state, "state.json"), []byte(strings.Replace(string(b), `"killed"`, `"running"`, 1)), 0o600)

	tb := startAgent(t, func(c *Config) { c.StateDir = state })
	if got := tb.runIn(t, "s1", `echo "$SBX $S1"; pwd`); got != "kept one\n/tmp" {
		t.Errorf("restored session: %q", got)
	}
	if got := tb.runIn(t, "default", `echo "$SBX $DEF"`); got != "kept d" {
		t.Errorf("restored default: %q", got)
	}
	var s api.Session
	tb.mustCall(t, 200, "GET", "/sessions/s1", nil, &s)
	if s.CommandTimeout != 5000 || s.Cwd != "/tmp" {
		t.Errorf("restored definition %+v", s)
	}
	var p api.Process
	tb.mustCall(t, 200, "GET", "/processes/alive", nil, &p)
	if p.Status != api.ProcessKilled || p.StatusReason != "agent restarted" {
		t.Errorf("restored running record: %+v", p)
	}
	var logs api.ProcessLogs
	tb.mustCall(t, 200, "GET", "/processes/done/logs", nil, &logs)
	if logs.Stdout != "finished\n" {
		t.Errorf("restored logs %+v", logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _, exit := checkLogStream(t, tb.streamLogs(t, ctx, "done"))
	if out != "finished\n" || *exit.ExitCode != 0 {
		t.Errorf("restored stream %q %+v", out, exit)
	}
	if fi, err := os.Stat(filepath.Join(state, "state.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode: %v %v", fi, err)
	}
}

// uidOf is the UID of name in the test agent's account database.
func uidOf(t testing.TB, ta *testAgent, name string) string {
	passwd, _ := os.ReadFile(filepath.Join(filepath.Dir(ta.workspace), "etc", "passwd"))
	for _, line := range strings.Split(string(passwd), "\n") {
		if f := strings.Split(line, ":"); len(f) > 2 && f[0] == name {
			return f[2]
		}
	}
	t.Fatalf("no %s in passwd:\n%s", name, passwd)
	return ""
}

// TestGVisorShellsStartWithoutTheWrapper: with GVisor set, session shells
// start directly (the agent binary named as the wrapper does not exist
// here), yet as the wrapper would make them: argv[0] "bash", a session of
// their own, the session's user with its group as the only one.
func TestGVisorShellsStartWithoutTheWrapper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a session as another user")
	}
	ta := startAgent(t, func(c *Config) {
		c.GVisor = true
		c.Self = "/nonexistent/sandbox-agent"
	})
	os.Chmod(filepath.Dir(ta.workspace), 0o755)
	probe := `read -r pid comm state ppid pgrp sid rest </proc/$$/stat; echo "$0 $((sid == $$)) $(id -u) $(id -G)"`
	if got, want := ta.run(t, probe), "bash 1 0 0\n"; got != want {
		t.Errorf("root shell: %q, want %q", got, want)
	}
	ta.mustCall(t, 201, "POST", "/sessions", api.CreateSessionRequest{ID: "dev", User: "coder"}, nil)
	uid := uidOf(t, ta, "coder")
	if got, want := ta.runIn(t, "dev", probe), "bash 1 "+uid+" "+uid; got != want {
		t.Errorf("user shell: %q, want %q (uid and gid alike)", got, want)
	}
}
