package e2e

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

func TestFirstExecCreatesTheSandbox(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 60*time.Second)
	sb := d.Client.Sandbox("demo")
	if _, err := sb.Info(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Info before first use = %v, want ErrNotFound", err)
	}
	if got := run(t, sb, "python3 -c 'print(2+2)'"); got != "4\n" {
		t.Fatalf("stdout = %q, want %q", got, "4\n")
	}
	info, err := sb.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != api.StatusRunning || info.Image != "host" || info.ID != "demo" {
		t.Errorf("info = %+v", info)
	}
	list, err := d.Client.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "demo" {
		t.Errorf("List = %v, %v", list, err)
	}
	if got := trim(run(t, sb, "hostname; pwd")); got != "demo\n/workspace" {
		t.Errorf("hostname; pwd = %q", got)
	}
}

func TestSessionStatePersistsAndPerCallOptionsDoNot(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("state")
		run(t, sb, "mkdir -p /tmp/app && cd /tmp/app && export GREETING=hello && greet() { echo \"$GREETING, $1\"; } && alias ll='echo aliased'")
		if got := trim(run(t, sb, "pwd; greet world; ll")); got != "/tmp/app\nhello, world\naliased" {
			t.Errorf("state across calls = %q", got)
		}
		got := trim(run(t, sb, "pwd; echo $GREETING $ONLY_HERE", client.WithCwd("/"),
			client.WithEnv(map[string]string{"GREETING": "bye", "ONLY_HERE": "x"})))
		if got != "/\nbye x" {
			t.Errorf("per-call cwd/env = %q", got)
		}
		if got := trim(run(t, sb, "pwd; echo \"[$GREETING][$ONLY_HERE]\"")); got != "/tmp/app\n[hello][]" {
			t.Errorf("per-call options leaked into the session: %q", got)
		}
		// A session's shell, started without the spawn wrapper on gVisor:
		// its user with that user's group alone, a session of its own.
		ctx := ctxT(t, time.Minute)
		se, err := sb.CreateSession(ctx, client.WithSessionID("coder"), client.AsUser("coder"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := se.Exec(ctx, `read -r pid comm state ppid pgrp sid rest </proc/$$/stat; echo "$0 $((sid == $$)) $(id -un) $(id -G) $(id -g)"`)
		if f := strings.Fields(res.Stdout); err != nil || len(f) != 5 || f[0] != "bash" || f[1] != "1" || f[2] != "coder" || f[3] != f[4] || f[3] == "0" {
			t.Errorf("user session shell: %v %q, want bash 1 coder GID GID", err, res.Stdout)
		}
	})
}

func TestExitCodesStdinAndOutput(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("codes")
		for cmd, want := range map[string]int{"true": 0, "false": 1, "sh -c 'exit 42'": 42, "no-such-command-xyz": 127} {
			if code, out := exitOf(t, sb, cmd); code != want {
				t.Errorf("%s: exit %d, want %d (%s)", cmd, code, want, out)
			}
		}
		res, err := sb.Exec(ctxT(t, 30*time.Second), "tr a-z A-Z; echo err >&2", client.WithStdin([]byte("hello\n")))
		if err != nil || res.Stdout != "HELLO\n" || res.Stderr != "err\n" || !res.Success {
			t.Errorf("stdin: %+v, %v", res, err)
		}
		// Binary output comes back byte for byte.
		res, err = sb.Exec(ctxT(t, 30*time.Second), "printf '\\000\\377\\376abc'")
		if err != nil || res.Stdout != "\x00\xff\xfeabc" {
			t.Errorf("binary stdout = %q, %v", res.Stdout, err)
		}
		// A multi-byte character split across writes is intact.
		res, err = sb.Exec(ctxT(t, 30*time.Second), "printf '\\342\\202'; sleep 0.1; printf '\\254'")
		if err != nil || res.Stdout != "€" {
			t.Errorf("split UTF-8 = %q, %v", res.Stdout, err)
		}
	})
}

func TestTimeoutKillsTheTreeAndKeepsTheSession(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("timeout")
		run(t, sb, "export KEEP=me")
		start := time.Now()
		res, err := sb.Exec(ctxT(t, 30*time.Second), "echo before; sleep 100 & bash -c 'sleep 100 & wait' & sleep 100",
			client.WithTimeout(500*time.Millisecond))
		if !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		// Not killed, the sleeps would hold the answer for 100 s; the
		// bound is far from what a loaded host adds (a gVisor shell may
		// take 3 s of grace to unwind).
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("timeout took %v", took)
		}
		if res == nil || !strings.Contains(res.Stdout, "before") {
			t.Errorf("partial output = %+v", res)
		}
		// The shell's report of the killed job ("<agent path>/cmd: line 1: 18
		// Killed sleep 60") is not the user's output.
		if res != nil && (strings.Contains(res.Stderr, "Killed") || strings.Contains(res.Stderr, "sandboxd-agent")) {
			t.Errorf("stderr after the timeout shows the shell's job report: %q", res.Stderr)
		}
		res, err = sb.Exec(ctxT(t, 30*time.Second), "echo on-stderr >&2; sleep 60", client.WithTimeout(500*time.Millisecond))
		if !errors.Is(err, client.ErrTimeout) || res == nil || res.Stderr != "on-stderr\n" {
			t.Errorf("sleep 60 past its timeout: err %v, result %+v; want ErrTimeout and only the command's own stderr", err, res)
		}
		if got := trim(run(t, sb, "echo $KEEP; pgrep -c sleep || true")); got != "me\n0" {
			t.Errorf("after timeout: %q (want the session state and no sleep left)", got)
		}
	})
}

// TestTimeoutKillsWhatTheCommandDetached: a process the timed-out command
// detached from the shell's tree ((cmd &); also a child forked while the
// kill took its parent) is killed with the command; an earlier command's
// background and detached jobs are not.
func TestTimeoutKillsWhatTheCommandDetached(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("detached")
		run(t, sb, "sleep 1051 & (sleep 1052 &)")
		time.Sleep(50 * time.Millisecond) // older than the next command by a few clock ticks
		_, err := sb.Exec(ctxT(t, 30*time.Second), "(sleep 1053 &); sleep 1054", client.WithTimeout(500*time.Millisecond))
		if !errors.Is(err, client.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
		count := `for n in 1051 1052 1053 1054; do printf '%s ' "$(pgrep -fxc "sleep $n")"; done`
		if got := run(t, sb, count); got != "1 1 0 0 " {
			t.Errorf("sleeps 1051 (earlier, background) 1052 (earlier, detached) 1053 (detached) 1054 left: %q, want 1 1 0 0", got)
		}
	})
}

// TestTimeoutStopsTheRestOfTheCommand: the shell does not go on with the
// rest of a timed-out command line, and keeps its state.
func TestTimeoutStopsTheRestOfTheCommand(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("timeout-rest")
	run(t, sb, "export KEEP=me; rm -f /tmp/x")
	res, err := sb.Exec(ctxT(t, 30*time.Second), "echo before; sleep 20; echo after; echo after > /tmp/x",
		client.WithTimeout(1500*time.Millisecond))
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Code != api.CodeCommandTimeout {
		t.Fatalf("err = %v, want %s", err, api.CodeCommandTimeout)
	}
	if res == nil || res.Stdout != "before\n" {
		t.Errorf("output = %+v, want only before", res)
	}
	time.Sleep(2 * time.Second) // the rest of the line would have run by now
	if got := trim(run(t, sb, "echo $KEEP; test -e /tmp/x && echo x-exists || echo no-x")); got != "me\nno-x" {
		t.Errorf("after the timeout: %q (want the session state and no /tmp/x)", got)
	}
}

func TestExitEndsTheSessionAndTheNextCallGetsAFreshOne(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("exiter")
	run(t, sb, "export GONE=1")
	_, err := sb.Exec(ctxT(t, 30*time.Second), "exit 3")
	if !errors.Is(err, client.ErrSessionTerminated) {
		t.Fatalf("exit: err = %v, want ErrSessionTerminated", err)
	}
	if got := trim(run(t, sb, "echo \"[$GONE]\"; pwd")); got != "[]\n/workspace" {
		t.Errorf("fresh session = %q", got)
	}
}

// TestRemovedStatusFIFOEndsTheCallAtOnce: a command that removes its
// session's status FIFO (through which the shell reports each command's
// end) fails at once with SESSION_TERMINATED, not at its timeout, and the
// next call gets a fresh shell.
func TestRemovedStatusFIFOEndsTheCallAtOnce(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("status-fifo")
		run(t, sb, "export GONE=1")
		start := time.Now()
		// "At once" is told from the timeout (120 s) by a bound far from
		// what a loaded host adds.
		_, err := sb.Exec(ctxT(t, 180*time.Second), "rm /run/sandboxd-agent/default/s; sleep 0.3; echo after",
			client.WithTimeout(120*time.Second))
		if took := time.Since(start); !errors.Is(err, client.ErrSessionTerminated) || took > 30*time.Second {
			t.Fatalf("err = %v after %s, want ErrSessionTerminated at once", err, took.Round(time.Millisecond))
		}
		if got := trim(run(t, sb, `echo "[$GONE]"`)); got != "[]" {
			t.Errorf("next call = %q, want a fresh shell", got)
		}
	})
}

func TestStreamingDeliversOutputAsItIsProduced(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("stream")
		run(t, sb, "true")
		st, err := sb.ExecStream(ctxT(t, 30*time.Second), "echo one; sleep 0.6; echo two >&2; sleep 0.2; (exit 5)")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		var types []string
		var firstOut, complete time.Time
		var exit int
		for {
			ev, err := st.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			types = append(types, ev.Type)
			switch ev.Type {
			case api.EventStdout:
				if firstOut.IsZero() {
					firstOut = time.Now()
				}
			case api.EventComplete:
				complete = time.Now()
				exit = *ev.ExitCode
			}
		}
		if got := strings.Join(types, ","); got != "start,stdout,stderr,complete" {
			t.Errorf("events = %s", got)
		}
		if exit != 5 {
			t.Errorf("exit code = %d", exit)
		}
		if gap := complete.Sub(firstOut); gap < 600*time.Millisecond {
			t.Errorf("first stdout came only %v before complete: output was not streamed live", gap)
		}
	})
}

func TestStreamClientDisconnectKillsTheCommand(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("disconnect")
	ctx := ctxT(t, 30*time.Second)
	st, err := sb.ExecStream(ctx, "echo started; sleep 300")
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := st.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == api.EventStdout {
			break
		}
	}
	st.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got := trim(run(t, sb, "pgrep -c -x sleep || true")); got == "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("sleep still runs 5s after the client went away")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestLargeOutputIsTruncatedInBufferedResults(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("bigout")
	res, err := sb.Exec(ctxT(t, 60*time.Second), "head -c 20000000 /dev/zero | tr '\\0' x")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Truncated || len(res.Stdout) != api.MaxBufferedOutputBytes {
		t.Errorf("truncated=%v len=%d, want true and %d", res.Truncated, len(res.Stdout), api.MaxBufferedOutputBytes)
	}
	// Streaming has no cap.
	st, err := sb.ExecStream(ctxT(t, 60*time.Second), "head -c 20000000 /dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for {
		ev, err := st.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == api.EventStdout {
			if !bytes.Equal([]byte(ev.Data), make([]byte, len(ev.Data))) {
				t.Fatal("stream data corrupted")
			}
			n += len(ev.Data)
		}
	}
	if n != 20000000 {
		t.Errorf("streamed %d bytes, want 20000000", n)
	}
}
