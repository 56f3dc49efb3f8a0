package client

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// codeStreamServer answers POST /code/run/stream with events and then
// ends the stream.
func codeStreamServer(t *testing.T, check func(api.RunCodeRequest), events ...api.CodeEvent) *Sandbox {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/sb/code/run/stream", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.RunCodeRequest](t, r)
		if check != nil {
			check(req)
		}
		sw := sse.NewWriter(w)
		for _, ev := range events {
			sw.Send(ev.Type, ev)
		}
	})
	return newTestClient(t, mux).Sandbox("sb")
}

func TestRunCodeCollects(t *testing.T) {
	sb := codeStreamServer(t, func(req api.RunCodeRequest) {
		if req.Code != "x" || req.Language != "python" || req.Timeout != 1500 {
			t.Errorf("request %+v", req)
		}
	},
		api.CodeEvent{Type: "start", ContextID: "default-python", Language: "python"},
		api.CodeEvent{Type: "stdout", Data: "Sum: "},
		api.CodeEvent{Type: "stdout", Data: "MTUKYg==", Encoding: "base64"}, // "15\nb"
		api.CodeEvent{Type: "stderr", Data: "warn\n"},
		api.CodeEvent{Type: "result", Result: &api.CodeResult{Text: "15", IsMainResult: true}},
		api.CodeEvent{Type: "execution_error", Error: &api.ExecutionError{Name: "E", Value: "v", Traceback: []string{"t"}}},
		api.CodeEvent{Type: "complete", ExecutionCount: 3, Duration: 7},
	)
	var got []string
	res, err := sb.RunCode(context.Background(), "x", RunCodeOptions{
		Language: "python", Timeout: 1500 * time.Millisecond,
		CodeCallbacks: CodeCallbacks{
			OnStdout: func(b []byte) { got = append(got, "out:"+string(b)) },
			OnStderr: func(b []byte) { got = append(got, "err:"+string(b)) },
			OnResult: func(r api.CodeResult) { got = append(got, "result:"+r.Text) },
			OnError:  func(e api.ExecutionError) { got = append(got, "error:"+e.Name) },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &api.RunCodeResult{
		Code: "x", ContextID: "default-python", Language: "python",
		Logs:           api.CodeLogs{Stdout: []string{"Sum: 15", "b"}, Stderr: []string{"warn"}},
		Results:        []api.CodeResult{{Text: "15", IsMainResult: true}},
		Error:          &api.ExecutionError{Name: "E", Value: "v", Traceback: []string{"t"}},
		ExecutionCount: 3, Duration: 7,
	}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if strings.Join(got, "|") != "out:Sum: |out:15\nb|err:warn\n|result:15|error:E" {
		t.Errorf("callbacks %q", got)
	}
}

func TestRunCodeStreamErrors(t *testing.T) {
	sb := codeStreamServer(t, nil,
		api.CodeEvent{Type: "start"},
		api.CodeEvent{Type: "stdout", Data: "partial\n"},
		api.CodeEvent{Type: "error", Code: api.CodeContextTerminated, Message: "gone"},
	)
	res, err := sb.RunCode(context.Background(), "x", RunCodeOptions{})
	if !errors.Is(err, ErrContextTerminated) || res == nil || len(res.Logs.Stdout) != 1 {
		t.Errorf("terminated: %v %+v", err, res)
	}

	sb = codeStreamServer(t, nil, api.CodeEvent{Type: "start"}, api.CodeEvent{Type: "stdout", Data: "x"})
	if _, err := sb.RunCode(context.Background(), "x", RunCodeOptions{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("lost stream: %v", err)
	}

	for _, tc := range []struct {
		code string
		o    RunCodeOptions
	}{
		{"", RunCodeOptions{}},
		{" \n", RunCodeOptions{}},
		{"1", RunCodeOptions{Timeout: -1}},
		{strings.Repeat("1", api.MaxCodeBytes+1), RunCodeOptions{}},
	} {
		if _, err := sb.RunCode(context.Background(), tc.code, tc.o); !errors.Is(err, ErrInvalid) {
			t.Errorf("RunCode(%.10q, %+v) = %v, want ErrInvalid", tc.code, tc.o, err)
		}
	}
}

func TestCodeErrorClasses(t *testing.T) {
	for code, want := range map[api.Code]error{
		api.CodeContextNotFound:        ErrNotFound,
		api.CodeContextTerminated:      ErrContextTerminated,
		api.CodeContextBusy:            ErrResourceExhausted,
		api.CodePythonNotAvailable:     ErrNotAvailable,
		api.CodeJavaScriptNotAvailable: ErrNotAvailable,
	} {
		if err := (&Error{Code: code}); !errors.Is(err, want) {
			t.Errorf("%s is not %v", code, want)
		}
	}
}
