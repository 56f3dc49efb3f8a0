package e2e

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

func TestProcessLifecycle(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		ctx := ctxT(t, 120*time.Second)
		sb := d.Client.Sandbox("procs")
		p, err := sb.StartProcess(ctx, "echo one; echo two >&2; exit 7", client.WithProcessID("quick"))
		if err != nil {
			t.Fatal(err)
		}
		if p.ID != "quick" || p.PID <= 0 || p.SessionID != "default" {
			t.Errorf("start: %+v", p.Process)
		}
		code, err := p.WaitForExit(ctx, 10*time.Second)
		if err != nil || code != 7 || p.Status != api.ProcessFailed || p.EndTime == nil {
			t.Errorf("exit: %d %+v %v", code, p.Process, err)
		}
		logs, err := sb.GetProcessLogs(ctx, "quick")
		if err != nil || string(logs.Stdout) != "one\n" || string(logs.Stderr) != "two\n" {
			t.Errorf("logs: %+v %v", logs, err)
		}
		if _, err := sb.StartProcess(ctx, "true", client.WithProcessID("quick")); !errors.Is(err, client.ErrConflict) {
			t.Errorf("duplicate ID: %v", err)
		}
		if _, err := sb.GetProcess(ctx, "ghost"); !errors.Is(err, client.ErrNotFound) {
			t.Errorf("unknown: %v", err)
		}
		// Streaming: process_info, output so far and live, one exit.
		q, err := sb.StartProcess(ctx, "echo first; sleep 0.5; echo second")
		if err != nil {
			t.Fatal(err)
		}
		st, err := q.StreamLogs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var types []string
		var out strings.Builder
		for {
			ev, err := st.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			types = append(types, ev.Type)
			out.WriteString(ev.Data)
			if ev.Type == api.EventExit && (ev.ExitCode == nil || *ev.ExitCode != 0) {
				t.Errorf("exit event %+v", ev)
			}
		}
		if types[0] != api.EventProcessInfo || types[len(types)-1] != api.EventExit || out.String() != "first\nsecond\n" {
			t.Errorf("stream %v %q", types, out.String())
		}
		// A background process never blocks exec, and outlives the call.
		if _, err := sb.StartProcess(ctx, "sleep 100", client.WithProcessID("bg")); err != nil {
			t.Fatal(err)
		}
		if got := trim(run(t, sb, "echo free")); got != "free" {
			t.Errorf("exec: %q", got)
		}
	})
}

func TestProcessTreeKillAndEscalation(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		ctx := ctxT(t, 120*time.Second)
		sb := d.Client.Sandbox("killer")
		// A deep tree, with a branch that left the group (setsid).
		tree := "bash -c 'bash -c \"sleep 301 & setsid sleep 302 & bash -c \\\"sleep 303\\\" & wait\" & wait' & sleep 304; wait"
		p, err := sb.StartProcess(ctx, tree)
		if err != nil {
			t.Fatal(err)
		}
		// Nine processes; a gVisor sandbox on a loaded host took more
		// than 10 s to start them.
		deadline := time.Now().Add(60 * time.Second)
		for n := ""; n != "4"; n = trim(run(t, sb, "pgrep -c -x sleep || true")) {
			if time.Now().After(deadline) {
				t.Fatalf("the tree did not start: %s sleeps of 4", n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := p.Kill(ctx, "SIGTERM"); err != nil {
			t.Fatal(err)
		}
		// gVisor hangs up the stopped process group the tree kill leaves
		// orphaned before the leader takes its SIGTERM: 129 (SIGHUP) there.
		if p.Status != api.ProcessKilled || (*p.ExitCode != 143 && !(onGVisor(t) && *p.ExitCode == 129)) {
			t.Errorf("after SIGTERM: exit %d, %+v", *p.ExitCode, p.Process)
		}
		if got := trim(run(t, sb, "sleep 0.2; pgrep -c -x sleep || true")); got != "0" {
			t.Errorf("%s sleeps survived the tree kill", got)
		}
		// A process that traps SIGTERM gets SIGKILL after the grace.
		q, err := sb.StartProcess(ctx, "trap 'echo caught' TERM; echo armed; while :; do sleep 0.05; done")
		if err != nil {
			t.Fatal(err)
		}
		// The start answers once bash runs, not once it has set its trap:
		// a SIGTERM before that ends it like any process.
		if _, err := q.WaitForLog(ctx, "armed", 30*time.Second); err != nil {
			t.Fatalf("waiting for the trap: %v", err)
		}
		if _, err := q.WaitForLog(ctx, "never", 200*time.Millisecond); !errors.Is(err, client.ErrTimeout) {
			t.Errorf("wait/log timeout: %v", err)
		}
		start := time.Now()
		if err := q.Kill(ctx, "", client.WithGracePeriod(500*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		// No upper bound near the grace: on a loaded host the SIGKILL and
		// the reaping after it took up to 7 s more (the agent's own test).
		if took := time.Since(start); q.Status != api.ProcessKilled || *q.ExitCode != 137 || took < 500*time.Millisecond || took > 30*time.Second {
			t.Errorf("escalation after %v: %+v", took, q.Process)
		}
		// Kill-all under concurrency.
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := sb.StartProcess(ctx, fmt.Sprintf("sleep %d & sleep %d; wait", 500+i, 600+i)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		n, err := sb.KillAllProcesses(ctx, "KILL")
		if err != nil || n != 10 {
			t.Errorf("kill-all: %d %v", n, err)
		}
		if got := trim(run(t, sb, "pgrep -c -x sleep || true")); got != "0" {
			t.Errorf("%s sleeps survived kill-all", got)
		}
		// A process timeout kills the tree and says so.
		r, err := sb.StartProcess(ctx, "sleep 100 & sleep 100", client.WithTimeout(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.WaitForExit(ctx, 10*time.Second); err != nil || r.Status != api.ProcessKilled || r.StatusReason != "timeout" {
			t.Errorf("timeout: %+v %v", r.Process, err)
		}
	})
}

func TestProcessReadinessAndStdin(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		ctx := ctxT(t, 120*time.Second)
		sb := d.Client.Sandbox("ready")
		web, err := sb.StartProcess(ctx, "echo starting; sleep 0.3; exec python3 -m http.server 8000 --bind 127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if status, err := web.WaitForPort(ctx, 8000, client.PortCheck{HTTP: true, Timeout: 20 * time.Second}); err != nil || status != 200 {
			t.Fatalf("wait/port http: %d %v", status, err)
		}
		if _, err := web.WaitForPort(ctx, 8001, client.PortCheck{Timeout: 300 * time.Millisecond}); !errors.Is(err, client.ErrTimeout) {
			t.Errorf("wait/port on a closed port: %v", err)
		}
		line, err := web.WaitForLogRegexp(ctx, regexp.MustCompile(`^start\w+$`), 5*time.Second)
		if err != nil || line != "starting" {
			t.Errorf("wait/log: %q %v", line, err)
		}
		bad, err := sb.StartProcess(ctx, "echo failing; exit 2")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.WaitForLog(ctx, "listening", 10*time.Second); !errors.Is(err, client.ErrExitedBeforeReady) {
			t.Errorf("exited before ready: %v", err)
		}
		cat, err := sb.StartProcess(ctx, "sort")
		if err != nil {
			t.Fatal(err)
		}
		if err := cat.WriteStdin(ctx, []byte("b\na\n")); err != nil {
			t.Fatal(err)
		}
		if err := cat.CloseStdin(ctx); err != nil {
			t.Fatal(err)
		}
		if code, err := cat.WaitForExit(ctx, 10*time.Second); err != nil || code != 0 {
			t.Fatalf("sort: %d %v", code, err)
		}
		if logs, _ := cat.Logs(ctx); string(logs.Stdout) != "a\nb\n" {
			t.Errorf("sort output %q", logs.Stdout)
		}
	})
}

// agentHWM is the agent's peak resident memory in KiB, read inside the
// sandbox.
func agentHWM(t *testing.T, sb *client.Sandbox) int {
	out := run(t, sb, "awk '/^VmHWM/ {print $2}' /proc/1/status")
	n, err := strconv.Atoi(trim(out))
	if err != nil {
		t.Fatalf("VmHWM %q", out)
	}
	return n
}

func TestProcessOutputBurstThroughLogs(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 180*time.Second)
	sb := d.Client.Sandbox("burst")
	before := agentHWM(t, sb)
	p, err := sb.StartProcess(ctx, "head -c 100000000 /dev/urandom | base64 -w 200; echo END")
	if err != nil {
		t.Fatal(err)
	}
	// A follower that reads slowly, and one that leaves.
	st, err := p.StreamLogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Next()
	start := time.Now()
	code, err := p.WaitForExit(ctx, 120*time.Second)
	if err != nil || code != 0 || !p.Truncated {
		t.Fatalf("burst: %d %+v %v", code, p.Process, err)
	}
	t.Logf("~135 MB of output logged in %v", time.Since(start))
	st.Close()
	afterBurst := agentHWM(t, sb)
	logs, err := p.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !logs.Truncated || len(logs.Stdout) > api.MaxLogBytes+api.LogTailBytes || !strings.HasSuffix(string(logs.Stdout), "END\n") {
		t.Errorf("logs: truncated %v, %d bytes", logs.Truncated, len(logs.Stdout))
	}
	after := agentHWM(t, sb)
	// KiB. The agent's share of a sandbox's memory is 32 MiB beyond
	// what user code leaves it.
	if afterBurst-before > 16<<10 || after-before > 24<<10 {
		t.Errorf("the agent's peak memory grew by %d MiB in the burst, %d MiB with the logs", (afterBurst-before)>>10, (after-before)>>10)
	}
	t.Logf("agent VmHWM %d KiB before, %d KiB after the burst, %d KiB after reading the logs", before, afterBurst, after)
}
