package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func TestHealth(t *testing.T) {
	ta := startAgent(t)
	resp, err := ta.client.Get("http://agent/internal/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h api.AgentHealth
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	want := api.AgentHealth{ProtocolVersion: api.ProtocolVersion, Version: "test", PID: os.Getpid()}
	if diff := cmp.Diff(want, h); diff != "" {
		t.Errorf("health (-want +got):\n%s", diff)
	}
}

func TestShellStatePersists(t *testing.T) {
	ta := startAgent(t)
	dir := t.TempDir()
	tests := []struct {
		name       string
		set, check string
		want       string
	}{
		{"cd", "cd " + dir, "pwd", dir + "\n"},
		{"export", "export GREETING=hello", "sh -c 'echo $GREETING'", "hello\n"},
		{"shell variable", "count=41", "echo $((count+1))", "42\n"},
		{"function", "greet() { echo \"hi $1\"; }", "greet bob", "hi bob\n"},
		{"alias", "alias ll='echo listing'", "ll now", "listing now\n"},
		{"associative array", "declare -A m=([k]=v)", "echo ${m[k]}", "v\n"},
		{"shell option", "set -o noglob", "echo *", "*\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta.run(t, tt.set)
			if got := ta.run(t, tt.check); got != tt.want {
				t.Errorf("%q after %q = %q, want %q", tt.check, tt.set, got, tt.want)
			}
		})
	}
}

// TestDispatchSurvivesUserCode: the shell's dispatch text is readonly;
// a command that tries to change or unset it (or the old FIFO number) does
// not break the commands after it, with stdin, env and cwd or without.
func TestDispatchSurvivesUserCode(t *testing.T) {
	ta := startAgent(t)
	for _, cmd := range []string{
		"__sbx_c='echo hijacked'; __sbx_w=; __sbx_ci=; __sbx_wi=",
		"unset __sbx_c __sbx_w __sbx_ci __sbx_wi",
		"__sbx_n=99",
	} {
		ta.exec(t, api.ExecRequest{Command: cmd})
		if got := ta.run(t, "echo ok"); got != "ok\n" {
			t.Fatalf("after %q: echo ok = %q", cmd, got)
		}
		res := ta.exec(t, api.ExecRequest{Command: "cat; echo $X; pwd", Stdin: "in\n", Env: map[string]string{"X": "x"}, Cwd: "/"})
		if res.ExitCode != 0 || res.Stdout != "in\nx\n/\n" {
			t.Fatalf("after %q: got %+v", cmd, res)
		}
	}
}

func TestBaseEnvironment(t *testing.T) {
	ta := startAgent(t)
	got := ta.run(t, `echo "$PWD|$HOME|$LANG|$TERM|$SANDBOX_TEST_VAR|${SANDBOXD_AGENT_SECRET-unset}|$0"`)
	want := ta.workspace + "|/root|C.UTF-8|dumb|base|unset|bash\n"
	if got != want {
		t.Errorf("environment = %q, want %q", got, want)
	}
}

func TestPerCallEnvAndCwdDoNotLeak(t *testing.T) {
	ta := startAgent(t)
	dir := t.TempDir()
	ta.run(t, "export KEPT=before; PLAIN=plain; unset GONE")
	res := ta.exec(t, api.ExecRequest{
		Command: `echo "$KEPT|$PLAIN|$GONE|$(pwd)"; sh -c 'echo "$KEPT|$PLAIN|$GONE"'; export OTHER=persists; cd /`,
		Env:     map[string]string{"KEPT": "call", "PLAIN": "it's \"quoted\" $HOME\nline2", "GONE": "here"},
		Cwd:     dir,
	})
	want := "call|it's \"quoted\" $HOME\nline2|here|" + dir + "\ncall|it's \"quoted\" $HOME\nline2|here\n"
	if res.Stdout != want || res.ExitCode != 0 {
		t.Fatalf("in the call: stdout %q (exit %d, stderr %q), want %q", res.Stdout, res.ExitCode, res.Stderr, want)
	}
	got := ta.run(t, `echo "$KEPT|$PLAIN|${GONE-unset}|$OTHER|$(pwd)"`)
	if want := "before|plain|unset|persists|" + ta.workspace + "\n"; got != want {
		t.Errorf("after the call: %q, want %q", got, want)
	}
}

func TestEnvValuesRoundTrip(t *testing.T) {
	ta := startAgent(t)
	var all strings.Builder
	for c := 1; c < 128; c++ {
		all.WriteByte(byte(c))
	}
	values := map[string]string{
		"ALL_ASCII": all.String(),
		"QUOTES":    `'"'\''"` + "`$(touch /tmp/pwned)`$HOME${HOME}",
		"UNICODE":   "naïve 😀 \u2028",
		"EMPTY":     "",
		"TRAILING":  "x\n\n",
		"BACKSLASH": `a\b\\c\`,
	}
	for name, value := range values {
		res := ta.exec(t, api.ExecRequest{Command: `printf '%s' "$` + name + `"`, Env: map[string]string{name: value}})
		if res.Stdout != value {
			t.Errorf("%s: got %q, want %q", name, res.Stdout, value)
		}
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Error("an env value was executed")
	}
}

func TestCwdThatDoesNotExist(t *testing.T) {
	ta := startAgent(t)
	res := ta.exec(t, api.ExecRequest{Command: "echo ran", Cwd: "/no/such/dir"})
	if res.ExitCode == 0 || res.Stdout != "" || !strings.Contains(res.Stderr, "/no/such/dir") {
		t.Errorf("got exit %d stdout %q stderr %q; want failure naming the directory", res.ExitCode, res.Stdout, res.Stderr)
	}
	if got := ta.run(t, "pwd"); got != ta.workspace+"\n" {
		t.Errorf("cwd after = %q", got)
	}
}

func TestStdin(t *testing.T) {
	ta := startAgent(t)
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', 'x'}
	tests := []struct {
		name     string
		req      api.ExecRequest
		want     string
		encoding string
	}{
		{"text", api.ExecRequest{Command: "cat", Stdin: "héllo\nworld"}, "héllo\nworld", ""},
		{"utf-8 named", api.ExecRequest{Command: "wc -c", Stdin: "abc", StdinEncoding: "utf-8"}, "3\n", ""},
		{"base64", api.ExecRequest{Command: "cat", Stdin: base64.StdEncoding.EncodeToString(binary), StdinEncoding: "base64"},
			base64.StdEncoding.EncodeToString(binary), api.EncodingBase64},
		{"none is empty", api.ExecRequest{Command: "cat; echo done"}, "done\n", ""},
		{"read builtin", api.ExecRequest{Command: "read a b; echo \"$b-$a\"", Stdin: "one two\n"}, "two-one\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := ta.exec(t, tt.req)
			if res.Stdout != tt.want || res.Encoding != tt.encoding {
				t.Errorf("stdout %q encoding %q, want %q %q", res.Stdout, res.Encoding, tt.want, tt.encoding)
			}
		})
	}
	// `read` in the shell itself must not leave stdin redirected.
	if got := ta.run(t, "echo $a"); got != "one\n" {
		t.Errorf("variable read from stdin = %q", got)
	}
}

func TestExitCodes(t *testing.T) {
	ta := startAgent(t)
	tests := []struct {
		command string
		code    int
	}{
		{"true", 0},
		{"false", 1},
		{"(exit 42)", 42},
		{"no-such-command-xyz", 127},
		{"sh -c 'kill -9 $$'", 137},
		{"return 3", 3},
		{"echo partial; if", 2}, // syntax error
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			res := ta.exec(t, api.ExecRequest{Command: tt.command})
			if res.ExitCode != tt.code || res.Success != (tt.code == 0) {
				t.Errorf("exit %d success %v, want %d; stderr %q", res.ExitCode, res.Success, tt.code, res.Stderr)
			}
		})
	}
	if !strings.Contains(ta.exec(t, api.ExecRequest{Command: "no-such-command-xyz"}).Stderr, "command not found") {
		t.Error("unknown command: no 'command not found' on stderr")
	}
}

func TestTimeoutKillsProcessTree(t *testing.T) {
	ta := startAgent(t)
	ta.run(t, "export STATE=kept; cd /tmp")
	tests := []struct {
		name, command, marker string
	}{
		{"background and foreground", "sleep 1001 & sleep 1001", "sleep 1001"},
		{"nested shell", "bash -c 'sleep 1002 & wait'", "sleep 1002"},
		{"pipeline", "echo started; sleep 1003 | cat", "sleep 1003"},
		// A child whose parent ended is re-parented to the agent (the
		// reaper), out of the shell's tree: (cmd &) does on purpose what
		// a parent killed while it forks does by accident.
		{"detached", "(sleep 1005 &); sleep 1006", "sleep 1005"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			e := ta.execError(t, api.ExecRequest{Command: tt.command, Timeout: 300}, http.StatusRequestTimeout, api.CodeCommandTimeout)
			// Not killed, the sleeps would hold the answer for 1000 s; the
			// bound is far from what a loaded host adds (3.6 s at load 38).
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("timeout took %s", took)
			}
			for _, k := range []string{"stdout", "stderr", "encoding", "duration", "exitCode"} {
				if _, ok := e.Details[k]; !ok {
					t.Errorf("details lack %q: %v", k, e.Details)
				}
			}
			if strings.Contains(e.Message, "lost") {
				t.Errorf("message says state was lost: %s", e.Message)
			}
			eventually(t, 2*time.Second, tt.marker+" to die", func() bool { return len(processesMatching(t, tt.marker)) == 0 })
			if got := ta.run(t, "echo $STATE; pwd"); got != "kept\n/tmp\n" {
				t.Errorf("session state after timeout = %q", got)
			}
		})
	}
	e := ta.execError(t, api.ExecRequest{Command: "echo started; sleep 1004", Timeout: 300}, http.StatusRequestTimeout, api.CodeCommandTimeout)
	if e.Details["stdout"] != "started\n" {
		t.Errorf("output before the timeout = %q", e.Details["stdout"])
	}
}

func TestTimeoutSparesEarlierBackgroundJobs(t *testing.T) {
	ta := startAgent(t)
	ta.run(t, "sleep 1010 & (sleep 1012 &)")
	time.Sleep(30 * time.Millisecond) // older than the next command by a few clock ticks
	ta.execError(t, api.ExecRequest{Command: "(sleep 1013 &); sleep 1011", Timeout: 200}, http.StatusRequestTimeout, api.CodeCommandTimeout)
	if len(processesMatching(t, "sleep 1010")) != 1 {
		t.Error("the earlier background job was killed with the timed-out command")
	}
	if len(processesMatching(t, "sleep 1012")) != 1 {
		t.Error("the earlier detached job was killed with the timed-out command")
	}
	eventually(t, 2*time.Second, "sleep 1013 to die", func() bool { return len(processesMatching(t, "sleep 1013")) == 0 })
	ta.run(t, "kill %1; pkill -f 'sleep 1012'") // clean up
}

// TestTimeoutStopsTheWholeCommand: after a timeout nothing more of the
// command runs, wherever in it the shell was (a function, a loop, a file it
// sourced, a loop of builtins), and the session keeps its state. Each
// command would leave a file behind if the shell went on with it.
func TestTimeoutStopsTheWholeCommand(t *testing.T) {
	ta := startAgent(t)
	dir := t.TempDir()
	// A DEBUG trap of the user's own survives across commands only with
	// set -T; the unwinding borrows both and must give them back.
	ta.run(t, "export STATE=kept; cd /tmp; set -T; trap ': user' DEBUG")
	inner := filepath.Join(dir, "inner.sh")
	if err := os.WriteFile(inner, []byte("sleep 1031; echo x > "+dir+"/inner\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, command string
		env           map[string]string
		cwd           string
	}{
		{"list", "echo before; sleep 1030; echo x > " + dir + "/list", nil, ""},
		{"function", "f() { sleep 1030; echo x > " + dir + "/f1; }; g() { f; echo x > " + dir + "/f2; }; echo before; g; echo x > " + dir + "/f3", nil, ""},
		{"loop", "echo before; while :; do sleep 1030; echo x >> " + dir + "/loop; done", nil, ""},
		{"or list", "echo before; sleep 1030 || echo x > " + dir + "/or", nil, ""},
		{"sourced file", "echo before; . " + inner + "; echo x > " + dir + "/sourced", nil, ""},
		{"eval", "echo before; eval 'sleep 1030; echo x > " + dir + "/eval1'; echo x > " + dir + "/eval2", nil, ""},
		{"pipeline", "echo before; sleep 1030 | cat; echo x > " + dir + "/pipe", nil, ""},
		{"builtin loop", "echo before; while :; do :; done; echo x > " + dir + "/busy", nil, ""},
		{"per-call env and cwd", "echo before; sleep 1030; echo x > " + dir + "/wrapped", map[string]string{"STATE": "call", "PERCALL": "1"}, "/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ta.execError(t, api.ExecRequest{Command: tt.command, Env: tt.env, Cwd: tt.cwd, Timeout: 300}, http.StatusRequestTimeout, api.CodeCommandTimeout)
			if e.Details["stdout"] != "before\n" {
				t.Errorf("output = %q, want only what came before the timeout", e.Details["stdout"])
			}
			if strings.Contains(e.Message, "lost") {
				t.Errorf("message says the state was lost: %s", e.Message)
			}
			eventually(t, 2*time.Second, "sleeps to die", func() bool {
				return len(processesMatching(t, "sleep 1030")) == 0 && len(processesMatching(t, "sleep 1031")) == 0
			})
			// Any later line would have run by now.
			time.Sleep(200 * time.Millisecond)
			if left, _ := os.ReadDir(dir); len(left) != 1 { // inner.sh
				t.Errorf("the command went on after its timeout: %v", left)
			}
			if got := ta.run(t, "echo $STATE ${PERCALL-unset}; pwd; trap -p DEBUG; echo $-"); got != "kept unset\n/tmp\ntrap -- ': user' DEBUG\nhBTs\n" {
				t.Errorf("session state after the timeout = %q", got)
			}
		})
	}
}

// TestTimeoutWithoutTheTrapRestartsTheShell: a command that reset the
// agent's trap cannot be unwound; its shell is killed (so nothing more of
// it runs either) and the message says the state was lost.
func TestTimeoutWithoutTheTrapRestartsTheShell(t *testing.T) {
	ta := startAgent(t)
	dir := t.TempDir()
	ta.run(t, "export STATE=lost")
	for _, reset := range []string{"trap - 64", "trap '' 64"} {
		t.Run(reset, func(t *testing.T) {
			e := ta.execError(t, api.ExecRequest{Command: "echo spinning; " + reset + "; sleep 1032; echo x > " + dir + "/after", Timeout: 300}, http.StatusRequestTimeout, api.CodeCommandTimeout)
			if !strings.Contains(e.Message, "state") {
				t.Errorf("message does not say the state was lost: %s", e.Message)
			}
			if e.Details["stdout"] != "spinning\n" {
				t.Errorf("output before the timeout = %q", e.Details["stdout"])
			}
			eventually(t, 2*time.Second, "sleep to die", func() bool { return len(processesMatching(t, "sleep 1032")) == 0 })
			time.Sleep(200 * time.Millisecond)
			if _, err := os.Stat(dir + "/after"); err == nil {
				t.Error("the command went on after its timeout")
			}
			if got := ta.run(t, "echo ${STATE-fresh}; pwd"); got != "fresh\n"+ta.workspace+"\n" {
				t.Errorf("session after the shell was replaced = %q", got)
			}
		})
	}
}

func TestExitTerminatesSession(t *testing.T) {
	ta := startAgent(t)
	ta.run(t, "cd /tmp; export STATE=old")
	e := ta.execError(t, api.ExecRequest{Command: "echo bye; echo err >&2; exit 7"}, http.StatusGone, api.CodeSessionTerminated)
	if e.Details["stdout"] != "bye\n" || e.Details["stderr"] != "err\n" || e.Details["exitCode"] != float64(7) {
		t.Errorf("details = %v", e.Details)
	}
	if got := ta.run(t, "echo ${STATE-new}; pwd"); got != "new\n"+ta.workspace+"\n" {
		t.Errorf("next command = %q, want a fresh shell in the workspace", got)
	}
	// Even a removed workspace does not keep the session from coming back.
	ta.execError(t, api.ExecRequest{Command: "cd /; rm -rf " + ta.workspace + "; exit"}, http.StatusGone, api.CodeSessionTerminated)
	if got := ta.run(t, "pwd"); got != ta.workspace+"\n" {
		t.Errorf("after removing the workspace: %q", got)
	}
	// exec replaces the shell: its output still arrives, then the session
	// ends.
	e = ta.execError(t, api.ExecRequest{Command: "exec sh -c 'sleep 0.1; echo replaced; exit 5'"}, http.StatusGone, api.CodeSessionTerminated)
	if e.Details["stdout"] != "replaced\n" || e.Details["exitCode"] != float64(5) {
		t.Errorf("exec: details = %v", e.Details)
	}
	ta.run(t, "true")
}

func TestBackgroundChildDoesNotHoldCompletion(t *testing.T) {
	ta := startAgent(t)
	start := time.Now()
	res := ta.exec(t, api.ExecRequest{Command: "sleep 100 & echo started"})
	// Held by the child, the answer would take 100 s; the bound is far
	// from what a loaded host adds.
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("command with a background child took %s", took)
	}
	if res.Stdout != "started\n" {
		t.Errorf("stdout = %q", res.Stdout)
	}
	// Output of an earlier command's background child never shows up in
	// a later command, and the child is not killed by a closed pipe.
	ta.run(t, "(sleep 0.2; echo late; echo $? > "+ta.workspace+"/late-status) &")
	got := ta.run(t, "sleep 0.4; echo now")
	if got != "now\n" {
		t.Errorf("later command's output = %q", got)
	}
	if status := ta.run(t, "cat late-status"); status != "0\n" {
		t.Errorf("background child's echo status = %q, want 0 (not killed by SIGPIPE)", status)
	}
	ta.run(t, "kill %1 2>/dev/null; true")
}

func TestBackgroundChildWritingNonStopDoesNotHoldCompletion(t *testing.T) {
	ta := startAgent(t)
	start := time.Now()
	res := ta.exec(t, api.ExecRequest{Command: "yes spam & sleep 0.1; echo done >&2"})
	// Held by the writer, the answer would never come; the bound is far
	// from what a loaded host adds (2.5 s at load 35, `yes` spinning).
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("took %s", took)
	}
	if res.Stderr != "done\n" || !strings.HasPrefix(res.Stdout, "spam\n") {
		t.Errorf("stdout %.20q... stderr %q", res.Stdout, res.Stderr)
	}
	if got := ta.run(t, "kill %1; echo next"); got != "next\n" {
		t.Errorf("next command: %q", got)
	}
}

func TestStreamOrderAndLatency(t *testing.T) {
	ta := startAgent(t)
	events := ta.stream(t, context.Background(), api.ExecRequest{Command: "echo a; sleep 0.3; echo b >&2; echo c"})
	checkStreamShape(t, events)
	var types []string
	for _, ev := range events {
		types = append(types, ev.Type+":"+ev.Data)
	}
	want := []string{"start:", "stdout:a\n", "stderr:b\n", "stdout:c\n", "complete:"}
	if diff := cmp.Diff(want, types); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	last := events[len(events)-1]
	if last.ExitCode == nil || *last.ExitCode != 0 {
		t.Errorf("complete without exit code 0: %+v", last.ExecEvent)
	}
	// How soon output arrives is BenchmarkStreamFirstByte's, not a test's.
	if gap := last.at.Sub(events[1].at); gap < 250*time.Millisecond {
		t.Errorf("first output arrived only %s before complete: not streamed", gap)
	}
}

func TestStreamUTF8Split(t *testing.T) {
	ta := startAgent(t)
	events := ta.stream(t, context.Background(), api.ExecRequest{Command: `printf 'x\xe2\x82'; sleep 0.1; printf '\xac'; sleep 0.1; printf '\xf0\x9f'; sleep 0.1; printf '\x98\x80!'`})
	checkStreamShape(t, events)
	var chunks []string
	for _, ev := range events {
		if ev.Type == api.EventStdout {
			if ev.Encoding != "" {
				t.Errorf("chunk %q sent as %s", ev.Data, ev.Encoding)
			}
			chunks = append(chunks, ev.Data)
		}
	}
	if diff := cmp.Diff([]string{"x", "€", "😀!"}, chunks); diff != "" {
		t.Errorf("chunks (-want +got):\n%s", diff)
	}
}

func TestBinaryOutputRoundTrips(t *testing.T) {
	ta := startAgent(t)
	data := make([]byte, 1000)
	rand.Read(data)
	data[0] = 0xff // never valid UTF-8
	req := api.ExecRequest{Command: "cat", Stdin: base64.StdEncoding.EncodeToString(data), StdinEncoding: api.EncodingBase64}

	res := ta.exec(t, req)
	if res.Encoding != api.EncodingBase64 {
		t.Fatalf("encoding %q", res.Encoding)
	}
	got, err := base64.StdEncoding.DecodeString(res.Stdout)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("buffered: output differs from input (err %v)", err)
	}

	events := ta.stream(t, context.Background(), req)
	checkStreamShape(t, events)
	if got := collectStream(t, events, api.EventStdout); !bytes.Equal(got, data) {
		t.Errorf("stream: output differs from input (%d bytes, want %d)", len(got), len(data))
	}

	// Random bytes straight from the command, compared with a copy it
	// kept.
	res = ta.exec(t, api.ExecRequest{Command: "head -c 1000 /dev/urandom | tee rand.bin"})
	kept, err := os.ReadFile(filepath.Join(ta.workspace, "rand.bin"))
	if err != nil {
		t.Fatal(err)
	}
	got, err = base64.StdEncoding.DecodeString(res.Stdout)
	if res.Encoding != api.EncodingBase64 || err != nil || len(kept) != 1000 || !bytes.Equal(got, kept) {
		t.Errorf("urandom: encoding %q, %d bytes decoded (err %v), want the 1000 bytes written", res.Encoding, len(got), err)
	}
}

func TestBufferedOutputTruncated(t *testing.T) {
	ta := startAgent(t)
	res := ta.exec(t, api.ExecRequest{Command: fmt.Sprintf("head -c %d /dev/zero | tr '\\0' a; echo tail >&2", api.MaxBufferedOutputBytes+4096)})
	if !res.Truncated || len(res.Stdout) != api.MaxBufferedOutputBytes || res.Stderr != "tail\n" || res.ExitCode != 0 {
		t.Errorf("truncated %v, stdout %d bytes, stderr %q, exit %d", res.Truncated, len(res.Stdout), res.Stderr, res.ExitCode)
	}
	if res := ta.exec(t, api.ExecRequest{Command: "echo small"}); res.Truncated {
		t.Error("small output marked truncated")
	}
}

func TestClientDisconnectKillsCommand(t *testing.T) {
	ta := startAgent(t)
	ta.run(t, "export STATE=kept")
	ctx, cancel := context.WithCancel(context.Background())
	after := filepath.Join(t.TempDir(), "after")
	resp := ta.openStream(t, ctx, api.ExecRequest{Command: "echo started; sleep 1020; echo x > " + after})
	readRaw(resp.Body, func(line string) bool { return !strings.Contains(line, "started") })
	eventually(t, time.Second, "sleep to start", func() bool { return len(processesMatching(t, "sleep 1020")) == 1 })
	cancel()
	resp.Body.Close()
	eventually(t, 3*time.Second, "sleep to die", func() bool { return len(processesMatching(t, "sleep 1020")) == 0 })
	if got := ta.run(t, "echo $STATE; echo $-; trap -p DEBUG"); got != "kept\nhBs\n" {
		t.Errorf("session after disconnect = %q", got)
	}
	if _, err := os.Stat(after); err == nil {
		t.Error("the command went on after the client went away")
	}
}

func TestStreamErrorsAreEvents(t *testing.T) {
	ta := startAgent(t)
	events := ta.stream(t, context.Background(), api.ExecRequest{Command: "echo x; sleep 10", Timeout: 200})
	checkStreamShape(t, events)
	if last := events[len(events)-1]; last.Type != api.EventError || last.Code != api.CodeCommandTimeout {
		t.Errorf("last event = %+v", last.ExecEvent)
	}
	events = ta.stream(t, context.Background(), api.ExecRequest{Command: "exit 3"})
	checkStreamShape(t, events)
	if last := events[len(events)-1]; last.Type != api.EventError || last.Code != api.CodeSessionTerminated {
		t.Errorf("last event = %+v", last.ExecEvent)
	}
}

func TestStreamWriteDeadlineDoesNotOutliveTheStream(t *testing.T) {
	ta := startAgent(t)
	ta.agent.server.writeTimeout = 50 * time.Millisecond
	checkStreamShape(t, ta.stream(t, context.Background(), api.ExecRequest{Command: "echo hi"}))
	time.Sleep(150 * time.Millisecond)
	// Same keep-alive connection, long after the stream's last deadline
	// (net/http clears it after each request).
	ta.run(t, "true")
}

func TestStreamKeepalive(t *testing.T) {
	ta := startAgent(t, func(c *Config) { c.Keepalive = 50 * time.Millisecond })
	start := time.Now()
	resp := ta.openStream(t, context.Background(), api.ExecRequest{Command: "sleep 0.4"})
	defer resp.Body.Close()
	keepalives := 0
	readRaw(resp.Body, func(line string) bool {
		if strings.HasPrefix(line, ":") {
			keepalives++
		}
		return !strings.HasPrefix(line, "event: complete")
	})
	// At most one per interval of the time the stream really lasted (a
	// loaded machine stretches "sleep 0.4"), and several in 400 ms.
	took := time.Since(start)
	if most := int(took/(50*time.Millisecond)) + 1; keepalives < 3 || keepalives > most {
		t.Errorf("%d keepalives in %v at a 50ms interval (want 3 to %d)", keepalives, took, most)
	}
}

func TestCommandsRunOneAtATimeInOrder(t *testing.T) {
	ta := startAgent(t)
	ta.run(t, "n=0")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ta.exec(t, api.ExecRequest{Command: "n=$((n+1)); v=$n; sleep 0.01; [ $v = $n ] || echo overlap >&2"})
		}()
	}
	wg.Wait()
	if got := ta.run(t, "echo $n"); got != "8\n" {
		t.Errorf("n = %q after 8 increments", got)
	}
}

func TestQueueBound(t *testing.T) {
	ta := startAgent(t, func(c *Config) { c.Sessions.MaxQueue = 1 })
	ctx, cancelRunning := context.WithCancel(context.Background())
	defer cancelRunning()
	running := ta.openStream(t, ctx, api.ExecRequest{Command: "sleep 1030"})
	defer running.Body.Close()
	// The queued stream is accepted (headers arrive) before its turn.
	queued := ta.openStream(t, context.Background(), api.ExecRequest{Command: "echo finally"})
	defer queued.Body.Close()
	status, body := ta.post(t, "/exec", api.ExecRequest{Command: "true"})
	if status != http.StatusTooManyRequests || !strings.Contains(string(body), string(api.CodeSessionBusy)) {
		t.Errorf("third command: %d %s", status, body)
	}
	cancelRunning()
	var got []string
	r := sse.NewReader(queued.Body)
	for {
		ev, err := r.Next()
		if err != nil {
			break
		}
		got = append(got, ev.Name)
	}
	if diff := cmp.Diff([]string{"start", "stdout", "complete"}, got); diff != "" {
		t.Errorf("queued stream (-want +got):\n%s", diff)
	}
}

func TestZombiesAreReaped(t *testing.T) {
	ta := startAgent(t)
	for range 20 {
		// Double fork: the sleep is orphaned and re-parented to the agent.
		ta.run(t, "(sleep 0.01 &); true & wait; sh -c 'exit 1' || true")
	}
	eventually(t, 2*time.Second, "zombies to be reaped", func() bool {
		return len(zombieChildren(t, os.Getpid())) == 0
	})
}

// zombieChildren lists zombies whose parent is pid.
func zombieChildren(t testing.TB, pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+2:]))
		if len(f) > 1 && f[0] == "Z" && f[1] == fmt.Sprint(pid) {
			out = append(out, i)
		}
	}
	return out
}

func TestValidation(t *testing.T) {
	ta := startAgent(t)
	tooManyEnv := map[string]string{}
	for i := range api.MaxEnvVars + 1 {
		tooManyEnv[fmt.Sprintf("V%d", i)] = "x"
	}
	big := strings.Repeat("a", maxExecBody+1)
	tests := []struct {
		name   string
		body   any
		status int
		code   api.Code
	}{
		{"empty body", "", 400, api.CodeInvalidJSON},
		{"not JSON", "{command:", 400, api.CodeInvalidJSON},
		{"trailing data", `{"command":"true"} {}`, 400, api.CodeInvalidJSON},
		{"wrong type", `{"command":"true","timeout":"soon"}`, 400, api.CodeInvalidJSON},
		{"array", `[]`, 400, api.CodeInvalidJSON},
		{"too large", `{"command":"` + big + `"}`, 413, api.CodeRequestTooLarge},
		{"no command", `{}`, 400, api.CodeValidationFailed},
		{"blank command", api.ExecRequest{Command: " \n\t"}, 400, api.CodeValidationFailed},
		{"NUL in command", api.ExecRequest{Command: "echo \x00"}, 400, api.CodeValidationFailed},
		{"command too long", api.ExecRequest{Command: strings.Repeat("a", api.MaxCommandBytes+1)}, 400, api.CodeValidationFailed},
		{"too many env vars", api.ExecRequest{Command: "true", Env: tooManyEnv}, 400, api.CodeValidationFailed},
		{"env name with =", api.ExecRequest{Command: "true", Env: map[string]string{"A=B": "x"}}, 400, api.CodeValidationFailed},
		{"env name injection", api.ExecRequest{Command: "true", Env: map[string]string{"A;touch /tmp/pwned;B": "x"}}, 400, api.CodeValidationFailed},
		{"env name starts with digit", api.ExecRequest{Command: "true", Env: map[string]string{"1A": "x"}}, 400, api.CodeValidationFailed},
		{"env name empty", api.ExecRequest{Command: "true", Env: map[string]string{"": "x"}}, 400, api.CodeValidationFailed},
		{"env value NUL", api.ExecRequest{Command: "true", Env: map[string]string{"A": "\x00"}}, 400, api.CodeValidationFailed},
		{"cwd NUL", api.ExecRequest{Command: "true", Cwd: "/tmp\x00"}, 400, api.CodeValidationFailed},
		{"negative timeout", api.ExecRequest{Command: "true", Timeout: -1}, 400, api.CodeValidationFailed},
		{"timeout too long", api.ExecRequest{Command: "true", Timeout: api.MaxTimeout.Milliseconds() + 1}, 400, api.CodeValidationFailed},
		{"bad stdin encoding", api.ExecRequest{Command: "true", Stdin: "x", StdinEncoding: "latin1"}, 400, api.CodeValidationFailed},
		{"bad base64", api.ExecRequest{Command: "true", Stdin: "!!!", StdinEncoding: "base64"}, 400, api.CodeValidationFailed},
		{"stdin too large", api.ExecRequest{Command: "true", Stdin: strings.Repeat("a", api.MaxStdinBytes+1)}, 400, api.CodeValidationFailed},
		{"bad session ID", api.ExecRequest{Command: "true", SessionID: "../etc"}, 400, api.CodeValidationFailed},
		{"unknown session", api.ExecRequest{Command: "true", SessionID: "other"}, 404, api.CodeSessionNotFound},
	}
	for _, tt := range tests {
		for _, path := range []string{"/exec", "/exec/stream"} {
			t.Run(tt.name+path, func(t *testing.T) {
				status, body := ta.post(t, path, tt.body)
				var e api.Error
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("status %d, body %.200s: %v", status, body, err)
				}
				if status != tt.status || e.Code != tt.code || e.Message == "" {
					t.Errorf("got %d %s %q, want %d %s", status, e.Code, e.Message, tt.status, tt.code)
				}
			})
		}
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Error("an env name was executed")
	}
	// The session still works.
	ta.run(t, "true")
}

func TestRoutes(t *testing.T) {
	ta := startAgent(t)
	tests := []struct {
		method, path string
		status       int
		code         api.Code
	}{
		{"GET", "/exec", 405, api.CodeMethodNotAllowed},
		{"DELETE", "/internal/health", 405, api.CodeMethodNotAllowed},
		{"GET", "/health", 404, api.CodeNotFound}, // internal routes live under /internal/ only
		{"GET", "/nope", 404, api.CodeNotFound},
		{"POST", "/exec/", 404, api.CodeNotFound},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, "http://agent"+tt.path, nil)
		resp, err := ta.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != tt.status || e.Code != tt.code {
			t.Errorf("%s %s: %d %s, want %d %s", tt.method, tt.path, resp.StatusCode, e.Code, tt.status, tt.code)
		}
	}
}
