package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// signalStateScript prints which signals the program running it has
// blocked and ignored, as the system calls say (gVisor's
// /proc/self/status has no SigBlk or SigIgn). Perl ignores SIGFPE itself.
const signalStateScript = `use POSIX;
my $mask = POSIX::SigSet->new;
sigprocmask(SIG_BLOCK, POSIX::SigSet->new, $mask);
my (@blocked, @ignored);
for my $n (1 .. 64) {
	next if $n == 9 || $n == 19;
	push @blocked, $n if $mask->ismember($n);
	my $act = POSIX::SigAction->new;
	push @ignored, $n if $n != 8 && sigaction($n, undef, $act) && $act->{HANDLER} eq 'IGNORE';
}
print "blocked:[@blocked] ignored:[@ignored]\n";
`

const (
	printSignalState = "perl /tmp/signals.pl"
	cleanSignalState = "blocked:[] ignored:[]"
)

// TestSandboxesInheritNoSignalStateFromTheDaemon: a daemon started with
// signals ignored and blocked (as nohup, a shell's background job or a
// supervisor leave it) passes none of that to what runs in its sandboxes,
// on every runtime (runc passes the daemon's blocked signals on to the
// agent; crun and runsc reset them): programs of exec, of a session of
// another user, background and login processes and terminals start with
// every signal at its default and none blocked, and a terminal's hangup
// ends its shell (129).
func TestSandboxesInheritNoSignalStateFromTheDaemon(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	if exec.Command("env", "--ignore-signal", "--block-signal", "true").Run() != nil {
		t.Skip("needs GNU env with --ignore-signal and --block-signal (coreutils 8.31)")
	}
	via := []string{"env", "--ignore-signal=HUP,INT,QUIT,PIPE,USR2,TSTP,TTIN,TTOU,WINCH",
		"--block-signal=HUP,INT,USR1,ALRM,TERM,CHLD,WINCH,RTMIN"}
	runtimeArgs := map[string][]string{"host-kernel": nil, "gvisor": {"--default-runtime", "gvisor"}}
	rts := runtimes(t)
	if _, err := exec.LookPath("runc"); err == nil {
		runtimeArgs["runc"] = []string{"--runtime", "runc"}
		rts = append(rts, "runc")
	}
	for _, rt := range rts {
		t.Run(rt, func(t *testing.T) {
			d := testdaemon.Start(t, testdaemon.Options{Args: runtimeArgs[rt], Via: via})
			checkSignalState(t, d)
		})
	}
}

func checkSignalState(t *testing.T, d *testdaemon.Daemon) {
	ctx := ctxT(t, 3*time.Minute)
	sb := d.Client.Sandbox("signals")
	if _, err := sb.WriteFile(ctx, "/tmp/signals.pl", []byte(signalStateScript), client.WithMode(0o644)); err != nil {
		t.Fatal(err)
	}
	want := func(what, got string) {
		t.Helper()
		if strings.TrimSpace(got) != cleanSignalState {
			t.Errorf("%s: %q, want %q", what, strings.TrimSpace(got), cleanSignalState)
		}
	}
	want("exec", run(t, sb, printSignalState))
	se, err := sb.CreateSession(ctx, client.WithSessionID("other"), client.AsUser("sigtest"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := se.Exec(ctx, printSignalState)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec in a session of another user: %+v %v", res, err)
	}
	want("session of another user", res.Stdout)

	p, err := sb.StartProcess(ctx, printSignalState, client.WithProcessID("state"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitForExit(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	logs, err := sb.GetProcessLogs(ctx, "state")
	if err != nil {
		t.Fatal(err)
	}
	want("process", string(logs.Stdout))
	want("login process", loginProcessOutput(t, d, sb, printSignalState))

	term, err := sb.Terminal(ctx, client.TerminalOptions{Session: "default", Cols: 200, Rows: 20})
	if err != nil {
		t.Fatal(err)
	}
	out := readTerminal(term)
	// In the foreground: an interactive bash's command substitutions
	// ignore SIGTSTP, SIGTTIN and SIGTTOU.
	io.WriteString(term, printSignalState+"\r")
	out.waitFor(t, cleanSignalState)
	io.WriteString(term, "echo ready; sleep 1000\r")
	out.waitFor(t, "ready\r\n")
	if err := sb.CloseTerminal(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	if code, err := term.Wait(ctx); err != nil || code != 128+1 {
		t.Errorf("a terminal's shell after its hangup: exit %d (%v), want 129 (SIGHUP)\n%s", code, err, out.String())
	}
}

// loginProcessOutput runs cmd as a login process (bash -l -c, the path of
// E2B's commands) and returns its stdout.
func loginProcessOutput(t *testing.T, d *testdaemon.Daemon, sb *client.Sandbox, cmd string) string {
	t.Helper()
	body, _ := json.Marshal(api.StartProcessRequest{Command: cmd, ProcessID: "login", Login: true})
	req, err := http.NewRequestWithContext(ctxT(t, time.Minute), http.MethodPost,
		d.URL+"/v1/sandboxes/"+sb.ID()+"/processes", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("starting a login process: %s %s", resp.Status, msg)
	}
	ctx := ctxT(t, time.Minute)
	if _, err := sb.Process("login").WaitForExit(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	logs, err := sb.GetProcessLogs(ctx, "login")
	if err != nil {
		t.Fatal(err)
	}
	return string(logs.Stdout)
}

// TestStraySignalsDoNotEndTheAgent: root in a sandbox can signal its
// agent (PID 1). A signal the daemon never sends did end it (HUP, INT) or
// crash it (QUIT, ABRT, ILL, TRAP, BUS, FPE, SEGV, STKFLT, SYS), losing
// every session and process of the sandbox with the call that sent it; now
// it does nothing, on every runtime: the call answers, the session keeps
// its state and PID 1 is the same process.
func TestStraySignalsDoNotEndTheAgent(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("stray")
		t.Cleanup(func() { sb.Destroy(ctxT(t, time.Minute)) })
		const startTime = `read -r l < /proc/1/stat; set -- ${l##*) }; echo ${20}`
		before := run(t, sb, "stray=kept; "+startTime)
		for _, sig := range []string{"HUP", "INT", "QUIT", "ABRT", "ILL", "TRAP", "BUS", "FPE", "SEGV", "STKFLT", "SYS", "PIPE", "USR1", "ALRM"} {
			res, err := sb.Exec(ctxT(t, time.Minute), "kill -s "+sig+" 1 && sleep 0.2 && echo $stray")
			if err != nil || res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "kept" {
				t.Errorf("kill -s %s 1: %v %+v", sig, err, res)
			}
		}
		if after := run(t, sb, startTime); after != before {
			t.Errorf("PID 1 started at %s before the signals, at %s after: the agent was restarted", strings.TrimSpace(before), strings.TrimSpace(after))
		}
	})
}
