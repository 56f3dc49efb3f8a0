package client

import (
	"errors"
	"io"
	"net/http"
	"testing"
)

// Every stream type of the SDK follows the one end-of-stream rule: it ends
// at its first terminal event (complete, exit or error, by name), reads
// nothing after it, and reports a stream cut before one as ErrUnavailable.
// The streams that used to read SSE themselves (process logs, lifecycle
// events, image builds) are the subject.
func TestEveryStreamEndsAtItsTerminalEvent(t *testing.T) {
	const after = "event: stdout\ndata: {\"type\":\"stdout\",\"data\":\"after the end\"}\n\n"
	logs := func(body string) func(*Sandbox) error {
		return func(sb *Sandbox) error {
			ls, err := sb.Process("p1").StreamLogs(t.Context())
			if err != nil {
				return err
			}
			defer ls.Close()
			for {
				ev, err := ls.Next()
				if err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if ev.Data == "after the end" {
					t.Errorf("log stream read past its terminal event")
				}
			}
		}
	}
	lifecycle := func(sb *Sandbox) error {
		es, err := sb.c.Events(t.Context(), "")
		if err != nil {
			return err
		}
		defer es.Close()
		for {
			if _, err := es.Next(); err != nil {
				return err
			}
		}
	}
	build := func(sb *Sandbox) error {
		_, err := sb.c.BuildBaseImage(t.Context(), false, nil)
		return err
	}
	tests := []struct {
		name, route, body string
		read              func(*Sandbox) error
		want              error // nil: a clean end
	}{
		{"logs end at exit", "GET /v1/sandboxes/demo/processes/p1/logs/stream",
			"event: stdout\ndata: {\"data\":\"x\"}\n\nevent: exit\ndata: {\"type\":\"exit\"}\n\n" + after, nil, nil},
		{"logs end at error", "GET /v1/sandboxes/demo/processes/p1/logs/stream",
			"event: error\ndata: {\"code\":\"PROCESS_NOT_FOUND\"}\n\n" + after, nil, ErrNotFound},
		{"logs cut", "GET /v1/sandboxes/demo/processes/p1/logs/stream",
			"event: stdout\ndata: {\"data\":\"x\"}\n\n", nil, ErrUnavailable},
		{"lifecycle ends at error", "GET /v1/events",
			"event: created\ndata: {\"type\":\"created\"}\n\nevent: error\ndata: {\"code\":\"RESOURCE_EXHAUSTED\"}\n\n" + after, lifecycle, ErrResourceExhausted},
		{"lifecycle cut", "GET /v1/events", "event: created\ndata: {\"type\":\"created\"}\n\n", lifecycle, ErrUnavailable},
		{"build ends at error", "POST /v1/images/build-base",
			"event: log\ndata: {\"data\":\"x\"}\n\nevent: error\ndata: {\"code\":\"VALIDATION_FAILED\"}\n\n" + after, build, ErrInvalid},
		{"build ends at a terminal event it does not expect", "POST /v1/images/build-base",
			"event: exit\ndata: {}\n\n" + after, build, ErrUnavailable},
		{"build cut", "POST /v1/images/build-base", "event: log\ndata: {\"data\":\"x\"}\n\n", build, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc(tt.route, streamOf(tt.body))
			sb := newTestClient(t, mux).Sandbox("demo")
			read := tt.read
			if read == nil {
				read = logs(tt.body)
			}
			err := read(sb)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}
