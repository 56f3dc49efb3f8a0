package main

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func TestExecFlagsMakeTheRequest(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		stdin string
		want  api.ExecRequest
	}{
		{
			"words are re-quoted",
			[]string{"exec", "demo", "--", "python3", "-c", "print(2+2)"},
			nil, "",
			api.ExecRequest{Command: "python3 -c 'print(2+2)'"},
		},
		{
			"one word is verbatim",
			[]string{"exec", "demo", "--", "echo $HOME | wc -c"},
			nil, "",
			api.ExecRequest{Command: "echo $HOME | wc -c"},
		},
		{
			"every flag",
			[]string{"exec", "--session", "build", "--env", "A=1", "-e", "B", "--env", "C=x=y,z", "--cwd", "/tmp", "--timeout", "1500ms", "-i", "demo", "--", "cat"},
			map[string]string{"B": "from-local"}, "input\x00bytes",
			api.ExecRequest{
				Command:       "cat",
				SessionID:     "build",
				Env:           map[string]string{"A": "1", "B": "from-local", "C": "x=y,z"},
				Cwd:           "/tmp",
				Timeout:       1500,
				Stdin:         base64.StdEncoding.EncodeToString([]byte("input\x00bytes")),
				StdinEncoding: api.EncodingBase64,
			},
		},
		{
			"flags after the ID",
			[]string{"exec", "demo", "-w", "/srv", "--timeout", "2s", "--", "ls", "-la"},
			nil, "",
			api.ExecRequest{Command: "ls -la", Cwd: "/srv", Timeout: 2000},
		},
		{
			"stdin is only read with -i",
			[]string{"exec", "demo", "--", "cat"},
			nil, "ignored",
			api.ExecRequest{Command: "cat"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDaemon(t)
			var got api.ExecRequest
			f.HandleFunc("POST /v1/sandboxes/demo/exec/stream", func(w http.ResponseWriter, r *http.Request) {
				got = decodeBody[api.ExecRequest](t, r)
				streamEvents(
					api.ExecEvent{Type: "start"},
					api.ExecEvent{Type: "complete", ExitCode: intp(0)},
				)(w, r)
			})
			res := runCLI(t, f, cliRun{args: tt.args, env: tt.env, stdin: tt.stdin})
			if res.code != 0 {
				t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExecUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"no args", []string{"exec"}, nil},
		{"no command", []string{"exec", "demo", "--"}, nil},
		{"two IDs", []string{"exec", "demo", "other", "--", "ls"}, nil},
		{"bad env", []string{"exec", "--env", "=x", "demo", "--", "ls"}, nil},
		{"unset local env", []string{"exec", "--env", "NOPE", "demo", "--", "ls"}, nil},
		{"bad timeout", []string{"exec", "--timeout", "soon", "demo", "--", "ls"}, nil},
		{"negative timeout", []string{"exec", "--timeout", "-1s", "demo", "--", "ls"}, nil},
		{"unknown flag", []string{"exec", "--bogus", "demo", "--", "ls"}, nil},
		{"invalid ID", []string{"exec", "Demo_1", "--", "ls"}, nil},
		{"bad url", []string{"exec", "--url", "localhost:7070", "demo", "--", "ls"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDaemon(t)
			res := runCLI(t, f, cliRun{args: tt.args, env: tt.env})
			if res.code != exitFailure {
				t.Errorf("exit %d, want %d", res.code, exitFailure)
			}
			if !strings.HasPrefix(res.stderr, "sandbox: ") {
				t.Errorf("stderr = %q, want a sandbox: message", res.stderr)
			}
			if reqs := f.requestLog(); len(reqs) != 0 {
				t.Errorf("requests sent: %v", reqs)
			}
		})
	}
}

func TestExecOutputAndExitCodes(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("\xff\xfe"))
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{
			"success",
			streamEvents(
				api.ExecEvent{Type: "start"},
				api.ExecEvent{Type: "stdout", Data: "4\n"},
				api.ExecEvent{Type: "complete", ExitCode: intp(0)},
			),
			"4\n", "", 0,
		},
		{
			"exit code and both streams, binary included",
			streamEvents(
				api.ExecEvent{Type: "start"},
				api.ExecEvent{Type: "stdout", Data: "out "},
				api.ExecEvent{Type: "stderr", Data: "err\n"},
				api.ExecEvent{Type: "stdout", Data: b64, Encoding: "base64"},
				api.ExecEvent{Type: "complete", ExitCode: intp(42)},
			),
			"out \xff\xfe", "err\n", 42,
		},
		{
			"command not found",
			streamEvents(
				api.ExecEvent{Type: "start"},
				api.ExecEvent{Type: "stderr", Data: "bash: nope: command not found\n"},
				api.ExecEvent{Type: "complete", ExitCode: intp(127)},
			),
			"", "bash: nope: command not found\n", 127,
		},
		{
			"timeout",
			streamEvents(
				api.ExecEvent{Type: "start"},
				api.ExecEvent{Type: "stdout", Data: "tick\n"},
				api.ExecEvent{Type: "error", Code: api.CodeCommandTimeout, Message: "command ran past its 2s timeout and was killed"},
			),
			"tick\n", "sandbox: COMMAND_TIMEOUT: command ran past its 2s timeout and was killed\n", 124,
		},
		{
			"agent died",
			streamEvents(
				api.ExecEvent{Type: "start"},
				api.ExecEvent{Type: "error", Code: api.CodeSandboxUnavailable, Message: "the sandbox's agent died"},
			),
			"", "sandbox: SANDBOX_UNAVAILABLE: the sandbox's agent died\n", 125,
		},
		{
			"stream cut before its end",
			streamEvents(
				api.ExecEvent{Type: "start"},
				api.ExecEvent{Type: "stdout", Data: "partial"},
			),
			"partial", "sandbox: exec stream ended before its terminal event: unavailable\n", 125,
		},
		{
			"api error before the stream",
			func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 400, api.Error{Code: api.CodeValidationFailed, Message: "cwd must be absolute"})
			},
			"", "sandbox: VALIDATION_FAILED: cwd must be absolute\n", 125,
		},
		{
			"capacity",
			func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 503, api.Error{Code: api.CodeCapacityExceeded, Message: "host is full"})
			},
			"", "sandbox: CAPACITY_EXCEEDED: host is full\n", 125,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDaemon(t)
			f.HandleFunc("POST /v1/sandboxes/demo/exec/stream", tt.handler)
			res := runCLI(t, f, cliRun{args: []string{"exec", "demo", "--", "cmd"}})
			if res.code != tt.wantCode || res.stdout != tt.wantStdout || res.stderr != tt.wantStderr {
				t.Errorf("got exit %d stdout %q stderr %q\nwant exit %d stdout %q stderr %q",
					res.code, res.stdout, res.stderr, tt.wantCode, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}

func TestExecInterruptCancelsTheCommand(t *testing.T) {
	f := newFakeDaemon(t)
	left := make(chan struct{})
	f.HandleFunc("POST /v1/sandboxes/demo/exec/stream", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		sw := sse.NewWriter(w)
		_ = sw.Send("start", api.ExecEvent{Type: "start"})
		_ = sw.Send("stdout", api.ExecEvent{Type: "stdout", Data: "started\n"})
		<-r.Context().Done() // the daemon kills the command when the client leaves
		close(left)
	})
	// The context stands for signal.NotifyContext: Ctrl-C cancels it.
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	res := runCLI(t, f, cliRun{args: []string{"exec", "demo", "--", "sleep 300"}, ctx: ctx})
	if res.code != exitInterrupted {
		t.Errorf("exit %d, want %d (stderr %q)", res.code, exitInterrupted, res.stderr)
	}
	if res.stdout != "started\n" {
		t.Errorf("stdout = %q", res.stdout)
	}
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon never saw the CLI leave")
	}
}
