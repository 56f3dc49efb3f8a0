package e2e

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

func TestSessionStateIsolation(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 120*time.Second)
	sb := d.Client.Sandbox("sessions")
	a, err := sb.CreateSession(ctx, client.WithSessionID("a"), client.WithEnv(map[string]string{"WHO": "a"}), client.WithCwd("/tmp"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := sb.CreateSession(ctx, client.WithSessionID("b"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sb.CreateSession(ctx, client.WithSessionID("a")); !errors.Is(err, client.ErrConflict) {
		t.Errorf("duplicate: %v", err)
	}
	mustRun := func(s *client.Session, cmd string) string {
		t.Helper()
		res, err := s.Exec(ctx, cmd)
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("%s: %q: %+v %v", s.ID(), cmd, res, err)
		}
		return strings.TrimSpace(res.Stdout)
	}
	mustRun(a, "export MY_VAR=hello; cd /; f() { echo fa; }; echo data > /workspace/shared.txt")
	if got := mustRun(b, `echo "[$MY_VAR][${WHO-}]"; pwd; type f >/dev/null 2>&1 || echo nofn; cat /workspace/shared.txt`); got != "[][]\n/workspace\nnofn\ndata" {
		t.Errorf("session b sees %q", got)
	}
	if got := mustRun(a, "echo $MY_VAR $WHO; pwd; f"); got != "hello a\n/\nfa" {
		t.Errorf("session a lost its state: %q", got)
	}
	// Processes are shared: started in a, seen from anywhere.
	p, err := a.StartProcess(ctx, "sleep 100")
	if err != nil {
		t.Fatal(err)
	}
	list, err := sb.ListProcesses(ctx)
	if err != nil || len(list) != 1 || list[0].SessionID != "a" {
		t.Errorf("list = %+v, %v", list, err)
	}
	if got := mustRun(b, "ps -eo args | grep -c '^sleep 100$'"); got != "1" {
		t.Errorf("b does not see a's process: %q", got)
	}
	// Parallel across sessions, never mixed. Each command says when it
	// began and ended (the sandbox's clock): run in parallel they overlap,
	// one after the other they do not. No bound on the time they took,
	// which a loaded host stretches (1.03 s for two 0.4 s commands at load
	// 25).
	var wg sync.WaitGroup
	spans := make([][2]float64, 2)
	for i, s := range []*client.Session{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := mustRun(s, `echo "$EPOCHREALTIME"; for i in 1 2 3 4; do echo `+s.ID()+`$i; sleep 0.25; done; echo "$EPOCHREALTIME"`)
			lines := strings.Split(out, "\n")
			if len(lines) != 6 || strings.Join(lines[1:5], "\n") != s.ID()+"1\n"+s.ID()+"2\n"+s.ID()+"3\n"+s.ID()+"4" {
				t.Errorf("mixed output: %q", out)
				return
			}
			spans[i][0], _ = strconv.ParseFloat(lines[0], 64)
			spans[i][1], _ = strconv.ParseFloat(lines[5], 64)
		}()
	}
	wg.Wait()
	if a, b := spans[0], spans[1]; !t.Failed() && !(a[0] < b[1] && b[0] < a[1]) {
		t.Errorf("the commands of two sessions ran one after the other: %v and %v", a, b)
	}
	// Deleting a kills its process; the default one is protected.
	if err := sb.DeleteSession(ctx, "default"); !errors.Is(err, client.ErrConflict) {
		t.Errorf("delete default: %v", err)
	}
	if err := a.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Refresh(ctx); err != nil || p.Status != "killed" {
		t.Errorf("process of the deleted session: %+v %v", p.Process, err)
	}
	if _, err := a.Exec(ctx, "true"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("exec in a deleted session: %v", err)
	}
	if got := mustRun(b, "pgrep -c -x sleep || true"); got != "0" {
		t.Errorf("sleep survived its session: %q", got)
	}
}

func TestEnvPrecedenceInASandbox(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 120*time.Second)
	sb := d.Client.Sandbox("envs", client.WithEnv(map[string]string{"LEVEL": "image", "ONLY_IMAGE": "i"}))
	if err := sb.SetEnvVars(ctx, map[string]string{"LEVEL": "sandbox", "API_KEY": "sk-secret-123"}); err != nil {
		t.Fatal(err)
	}
	res, err := sb.Exec(ctx, `echo "$LEVEL $ONLY_IMAGE $API_KEY"`)
	if err != nil || strings.TrimSpace(res.Stdout) != "sandbox i sk-secret-123" {
		t.Fatalf("default session: %+v %v", res, err)
	}
	app, err := sb.CreateSession(ctx, client.WithSessionID("app"), client.WithEnv(map[string]string{"LEVEL": "session"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := app.UnsetEnvVars(ctx, "API_KEY"); err != nil {
		t.Fatal(err)
	}
	res, _ = app.Exec(ctx, `echo "$LEVEL [${API_KEY-unset}]"; echo $$`)
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	if lines[0] != "session [unset]" {
		t.Errorf("session: %q", res.Stdout)
	}
	res, _ = app.Exec(ctx, `echo "$LEVEL"`, client.WithEnv(map[string]string{"LEVEL": "command"}))
	if strings.TrimSpace(res.Stdout) != "command" {
		t.Errorf("per-command: %q", res.Stdout)
	}
	// No process of the app session carries the secret.
	p, err := app.StartProcess(ctx, "sleep 100")
	if err != nil {
		t.Fatal(err)
	}
	res, _ = sb.Exec(ctx, "cat /proc/"+lines[1]+"/environ /proc/"+strconv.Itoa(p.PID)+"/environ | tr '\\0' '\\n' | grep -c sk-secret-123 || true")
	if strings.TrimSpace(res.Stdout) != "0" {
		t.Errorf("the secret is in the app session's processes: %q", res.Stdout)
	}
}

func TestNonRootSessionInASandbox(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 120*time.Second)
	sb := d.Client.Sandbox("users")
	if err := sb.SetEnvVars(ctx, map[string]string{"ROOT_TOKEN": "tok-abc"}); err != nil {
		t.Fatal(err)
	}
	run(t, sb, "echo ready")
	dev, err := sb.CreateSession(ctx, client.WithSessionID("dev"), client.AsUser("coder"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := dev.Exec(ctx, `id -un; id -u; echo $HOME; cd && touch mine && ls -l mine | cut -d' ' -f3; grep -c '^coder:' /etc/passwd`)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	if len(lines) != 5 || lines[0] != "coder" || lines[1] == "0" || lines[2] != "/home/coder" || lines[3] != "coder" || lines[4] != "1" {
		t.Fatalf("user session: %q %q", res.Stdout, res.Stderr)
	}
	// Everything root's stays out of reach.
	for what, cmd := range map[string]string{
		"agent state":          "cat /var/lib/sandboxd-agent/state.json",
		"default session env":  "cat /proc/$(pgrep -u root -x bash | head -1)/environ",
		"agent environ":        "cat /proc/1/environ",
		"root's command lines": "cat /proc/1/cmdline; for p in $(pgrep -u root); do cat /proc/$p/cmdline; done | grep .",
		"root's processes":     "ps -u root -o pid= | grep .",
		"shadow":               "cat /etc/shadow",
		"user cgroup":          "echo $$ > /.sandboxd/cgroup/*/cgroup.procs",
		// Any signal that reached the agent would be a way to stop the
		// sandbox (QUIT ends a Go program, STOP freezes it) or to meddle
		// with a pause (gVisor's rebind signal).
		"signal the agent": "(for s in QUIT USR1 USR2 HUP TERM INT STOP TSTP CONT ALRM WINCH SYS; do kill -s $s 1 2>/dev/null && exit 0; done; exit 1)",
		"ptrace the agent": `python3 -c 'import ctypes,sys; libc=ctypes.CDLL(None); sys.exit(0 if libc.ptrace(16, 1, 0, 0)==0 else 1)'`,
	} {
		res, err := dev.Exec(ctx, cmd)
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode == 0 || strings.Contains(res.Stdout, "tok-abc") {
			t.Errorf("%s: reachable by the user (exit %d): %q", what, res.ExitCode, res.Stdout)
		}
	}
	p, err := dev.StartProcess(ctx, "id -un")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitForExit(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	logs, err := p.Logs(ctx)
	if err != nil || strings.TrimSpace(string(logs.Stdout)) != "coder" {
		t.Errorf("process of the user session ran as %q (%v)", logs.Stdout, err)
	}
	// A second session as the same user reuses the account.
	if _, err := sb.CreateSession(ctx, client.WithSessionID("dev2"), client.AsUser("coder")); err != nil {
		t.Fatal(err)
	}
	if got := trim(run(t, sb, "grep -c '^coder:' /etc/passwd")); got != "1" {
		t.Errorf("passwd entries: %s", got)
	}
}

func TestSessionsAndEnvSurviveAnAgentRestart(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 120*time.Second)
	sb := d.Client.Sandbox("restart")
	if err := sb.SetEnvVars(ctx, map[string]string{"KEEP": "sandbox"}); err != nil {
		t.Fatal(err)
	}
	s, err := sb.CreateSession(ctx, client.WithSessionID("work"), client.WithEnv(map[string]string{"MINE": "work"}), client.WithCwd("/tmp"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := sb.StartProcess(ctx, "echo up; sleep 1000", client.WithProcessID("long"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitForLog(ctx, "up", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The agent (PID 1) shuts down as a sleeping sandbox's would; the next
	// call starts the container again.
	sb.Exec(ctx, "kill -TERM 1")
	// Wait for the new agent: the old one may still answer while it
	// shuts down.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := p.Refresh(ctx)
		if err == nil && p.Status == "killed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process record after the restart: %+v %v", p.Process, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if p.StatusReason != "agent shut down" && p.StatusReason != "agent restarted" {
		t.Errorf("reason %q", p.StatusReason)
	}
	res, err := s.Exec(ctx, `echo "$KEEP $MINE"; pwd`)
	if err != nil || strings.TrimSpace(res.Stdout) != "sandbox work\n/tmp" {
		t.Fatalf("after the restart: %+v %v", res, err)
	}
	logs, err := p.Logs(ctx)
	if err != nil || string(logs.Stdout) != "up\n" {
		t.Errorf("logs after the restart: %+v %v", logs, err)
	}
}
