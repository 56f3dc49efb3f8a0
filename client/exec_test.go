package client

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sandboxd/sandboxd/api"
)

func TestExecRequestFromOptions(t *testing.T) {
	stdin := []byte("binary\x00\xff input")
	tests := []struct {
		name string
		opts []ExecOption
		want api.ExecRequest
	}{
		{"no options", nil, api.ExecRequest{Command: "cmd"}},
		{
			"every option",
			[]ExecOption{
				WithEnv(map[string]string{"A": "1"}),
				WithEnv(map[string]string{"B": "2"}),
				WithCwd("/workspace"),
				WithTimeout(1500 * time.Millisecond),
				WithStdin(stdin),
				InSession("build"),
			},
			api.ExecRequest{
				Command:       "cmd",
				SessionID:     "build",
				Env:           map[string]string{"A": "1", "B": "2"},
				Cwd:           "/workspace",
				Timeout:       1500,
				Stdin:         base64.StdEncoding.EncodeToString(stdin),
				StdinEncoding: api.EncodingBase64,
			},
		},
		{"sub-millisecond timeout rounds up", []ExecOption{WithTimeout(100 * time.Microsecond)}, api.ExecRequest{Command: "cmd", Timeout: 1}},
		{"timeout rounds up to whole ms", []ExecOption{WithTimeout(1001 * time.Microsecond)}, api.ExecRequest{Command: "cmd", Timeout: 2}},
		{"empty stdin is still sent", []ExecOption{WithStdin([]byte{})}, api.ExecRequest{Command: "cmd", StdinEncoding: api.EncodingBase64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got api.ExecRequest
			mux := http.NewServeMux()
			mux.HandleFunc("POST /v1/sandboxes/demo/exec", func(w http.ResponseWriter, r *http.Request) {
				got = decodeBody[api.ExecRequest](t, r)
				writeJSON(w, 200, api.ExecResult{Success: true, Command: got.Command})
			})
			c := newTestClient(t, mux)
			if _, err := c.Sandbox("demo").Exec(t.Context(), "cmd", tt.opts...); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExecRefusesWhatTheDaemonWould(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("unexpected request %s %s", r.Method, r.URL.Path)
	}))
	tests := []struct {
		name    string
		command string
		opts    []ExecOption
	}{
		{"empty command", "", nil},
		{"command too long", strings.Repeat("x", api.MaxCommandBytes+1), nil},
		{"stdin too large", "cat", []ExecOption{WithStdin(make([]byte, api.MaxStdinBytes+1))}},
		{"negative timeout", "true", []ExecOption{WithTimeout(-time.Second)}},
		{"timeout too long", "true", []ExecOption{WithTimeout(api.MaxTimeout + time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Sandbox("demo").Exec(t.Context(), tt.command, tt.opts...)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Exec: %v, want ErrInvalid", err)
			}
			_, err = c.Sandbox("demo").ExecStream(t.Context(), tt.command, tt.opts...)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ExecStream: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestExecResult(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name string
		wire api.ExecResult
		want api.ExecResult
	}{
		{
			"utf-8",
			api.ExecResult{Success: true, Stdout: "4\n", Stderr: "warn\n", Command: "c", SessionID: "default", Duration: 12},
			api.ExecResult{Success: true, Stdout: "4\n", Stderr: "warn\n", Command: "c", SessionID: "default", Duration: 12},
		},
		{
			"non-zero exit is a result, not an error",
			api.ExecResult{ExitCode: 3, Stderr: "boom\n"},
			api.ExecResult{ExitCode: 3, Stderr: "boom\n"},
		},
		{
			"base64 is decoded",
			api.ExecResult{Success: true, Stdout: b64("\x89PNG\x00\xff"), Stderr: b64("é"), Encoding: api.EncodingBase64, Truncated: true},
			api.ExecResult{Success: true, Stdout: "\x89PNG\x00\xff", Stderr: "é", Truncated: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("POST /v1/sandboxes/demo/exec", func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 200, tt.wire)
			})
			c := newTestClient(t, mux)
			res, err := c.Sandbox("demo").Exec(t.Context(), "c")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, res.ExecResult); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
			if got, want := res.Duration(), time.Duration(tt.wire.Duration)*time.Millisecond; got != want {
				t.Errorf("Duration() = %v, want %v", got, want)
			}
		})
	}
}

func TestExecBadBase64IsAnError(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/exec", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.ExecResult{Stdout: "%%%", Encoding: api.EncodingBase64})
	})
	c := newTestClient(t, mux)
	if _, err := c.Sandbox("demo").Exec(t.Context(), "c"); err == nil {
		t.Fatal("Exec with undecodable output succeeded")
	}
}

func TestExecPartialResult(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name     string
		status   int
		code     api.Code
		details  map[string]any
		sentinel error
		want     api.ExecResult
	}{
		{
			"timeout with output",
			408, api.CodeCommandTimeout,
			map[string]any{"stdout": "tick\ntick\n", "stderr": "", "duration": 1000, "exitCode": 137},
			ErrTimeout,
			api.ExecResult{ExitCode: 137, Stdout: "tick\ntick\n", Command: "loop", SessionID: "default", Duration: 1000},
		},
		{
			"timeout with base64 output",
			408, api.CodeCommandTimeout,
			map[string]any{"stdout": b64("\xff\xfe"), "stderr": b64("err"), "encoding": "base64", "duration": 5},
			ErrTimeout,
			api.ExecResult{ExitCode: -1, Stdout: "\xff\xfe", Stderr: "err", Command: "loop", SessionID: "default", Duration: 5},
		},
		{
			"timeout without details",
			408, api.CodeCommandTimeout, nil,
			ErrTimeout,
			api.ExecResult{ExitCode: -1, Command: "loop", SessionID: "default"},
		},
		{
			"session terminated",
			410, api.CodeSessionTerminated,
			map[string]any{"stdout": "bye\n", "exitCode": 0},
			ErrSessionTerminated,
			api.ExecResult{ExitCode: 0, Stdout: "bye\n", Command: "loop", SessionID: "default"},
		},
		{
			"undecodable partial output is dropped",
			408, api.CodeCommandTimeout,
			map[string]any{"stdout": "%%%", "encoding": "base64"},
			ErrTimeout,
			api.ExecResult{ExitCode: -1, Command: "loop", SessionID: "default"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("POST /v1/sandboxes/demo/exec", func(w http.ResponseWriter, r *http.Request) {
				writeError(w, tt.status, tt.code, "command stopped", tt.details)
			})
			c := newTestClient(t, mux)
			res, err := c.Sandbox("demo").Exec(t.Context(), "loop", WithTimeout(time.Second))
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("Exec: %v, want %v", err, tt.sentinel)
			}
			var e *Error
			if !errors.As(err, &e) || e.Status != tt.status || e.Code != tt.code {
				t.Errorf("error = %#v, want status %d code %s", err, tt.status, tt.code)
			}
			if res == nil {
				t.Fatal("no partial result")
			}
			if diff := cmp.Diff(tt.want, res.ExecResult); diff != "" {
				t.Errorf("partial result (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExecOtherErrorsHaveNoResult(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/exec", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, 503, api.CodeSandboxUnavailable, "agent gone", nil)
	})
	c := newTestClient(t, mux)
	res, err := c.Sandbox("demo").Exec(t.Context(), "true")
	if !errors.Is(err, ErrUnavailable) || res != nil {
		t.Fatalf("Exec = %v, %v; want nil, ErrUnavailable", res, err)
	}
}

func TestExecContextCancel(t *testing.T) {
	gone := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/exec", func(w http.ResponseWriter, r *http.Request) {
		// Like the daemon, read the body first: only then does net/http
		// notice the client leaving.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done() // the daemon sees the client leave and kills the command
		close(gone)
	})
	c := newTestClient(t, mux)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Sandbox("demo").Exec(ctx, "sleep 100")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exec: %v, want context.DeadlineExceeded", err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw the request end")
	}
}
