package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func intp(i int) *int { return &i }

// streamOf returns a handler that answers an exec stream with the raw SSE
// text body, flushed in one go, then ends the response.
func streamOf(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", sse.ContentType)
		w.WriteHeader(200)
		_, _ = io.WriteString(w, body)
	}
}

func event(v api.ExecEvent) string {
	return fmt.Sprintf("event: %s\ndata: %s\n\n", v.Type, mustJSON(v))
}

func mustJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}

func newStreamClient(t *testing.T, h http.HandlerFunc) *Sandbox {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sandboxes/demo/exec/stream", h)
	return newTestClient(t, mux).Sandbox("demo")
}

// readAll reads a stream with Next until it returns an error, and returns
// the events and that error.
func readAll(st *ExecStream) ([]api.ExecEvent, error) {
	var evs []api.ExecEvent
	for {
		ev, err := st.Next()
		if err != nil {
			if ev.Type != "" {
				evs = append(evs, ev)
			}
			return evs, err
		}
		evs = append(evs, ev)
	}
}

var ignoreTimestamp = cmpopts.IgnoreFields(api.ExecEvent{}, "Timestamp")

func TestExecStreamEvents(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("\xff\x00bin"))
	body := ": keepalive\n\n" +
		event(api.ExecEvent{Type: "start", Command: "c", SessionID: "default"}) +
		": keepalive\n\n" +
		event(api.ExecEvent{Type: "stdout", Data: "hello\n"}) +
		event(api.ExecEvent{Type: "stderr", Data: b64, Encoding: "base64"}) +
		"event: stdout\r\ndata: {\"type\":\"stdout\",\"data\":\"crlf\",\"futureField\":1}\r\n\r\n" +
		": keepalive\n\n" +
		event(api.ExecEvent{Type: "complete", ExitCode: intp(3), Duration: 42}) +
		": trailing keepalive\n\n"
	sb := newStreamClient(t, streamOf(body))
	st, err := sb.ExecStream(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := readAll(st)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("after complete: %v, want io.EOF", err)
	}
	want := []api.ExecEvent{
		{Type: "start", Command: "c", SessionID: "default"},
		{Type: "stdout", Data: "hello\n"},
		{Type: "stderr", Data: "\xff\x00bin"},
		{Type: "stdout", Data: "crlf"},
		{Type: "complete", ExitCode: intp(3), Duration: 42},
	}
	if diff := cmp.Diff(want, got, ignoreTimestamp); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if _, err := st.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next after the end: %v, want io.EOF again", err)
	}
}

func TestExecStreamErrorEvent(t *testing.T) {
	body := event(api.ExecEvent{Type: "start"}) +
		event(api.ExecEvent{Type: "stdout", Data: "partial"}) +
		event(api.ExecEvent{Type: "error", Code: api.CodeCommandTimeout, Message: "ran past 1s"})
	sb := newStreamClient(t, streamOf(body))
	st, err := sb.ExecStream(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, err := readAll(st)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Next: %v, want ErrTimeout", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != api.CodeCommandTimeout || e.Message != "ran past 1s" {
		t.Errorf("error = %#v", err)
	}
	if last := evs[len(evs)-1]; last.Type != api.EventError || last.Code != api.CodeCommandTimeout {
		t.Errorf("last event = %+v, want the error event", last)
	}
	if _, err := st.Next(); !errors.Is(err, io.EOF) {
		t.Errorf("Next after the error event: %v, want io.EOF", err)
	}
}

func TestExecStreamEndsWithoutTerminalEvent(t *testing.T) {
	start := event(api.ExecEvent{Type: "start"})
	tests := []struct {
		name string
		body string
	}{
		{"empty", ""},
		{"after start", start},
		{"after output", start + event(api.ExecEvent{Type: "stdout", Data: "x"})},
		{"inside an event", start + "event: complete\ndata: {\"type\":\"complete\",\"exitCode\":0}\n"},
		{"inside a line", start + "event: complete\ndata: {\"type\":\"comp"},
		{"complete without exit code", start + "event: complete\ndata: {\"type\":\"complete\"}\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := newStreamClient(t, streamOf(tt.body))
			st, err := sb.ExecStream(t.Context(), "c")
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			evs, err := readAll(st)
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("Next: %v, want ErrUnavailable", err)
			}
			for _, ev := range evs {
				if api.IsTerminal(ev.Type) {
					t.Errorf("got terminal event %+v from a cut stream", ev)
				}
			}
			if _, again := st.Next(); !errors.Is(again, ErrUnavailable) {
				t.Errorf("Next after the failure: %v, want the same error", again)
			}

			// Collect must not make up a completion either.
			st2, err := sb.ExecStream(t.Context(), "c")
			if err != nil {
				t.Fatal(err)
			}
			res, err := st2.Collect(Callbacks{})
			if !errors.Is(err, ErrUnavailable) || res == nil || res.Success || res.ExitCode != -1 {
				t.Errorf("Collect = %+v, %v; want a failed partial result and ErrUnavailable", res, err)
			}
		})
	}
}

func TestExecStreamHTTPErrors(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    error
	}{
		{"api error", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, 400, api.CodeValidationFailed, "bad cwd", nil)
		}, ErrInvalid},
		{"not an event stream", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, api.ExecResult{})
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := newStreamClient(t, tt.handler)
			st, err := sb.ExecStream(t.Context(), "c")
			if err == nil {
				st.Close()
				t.Fatal("ExecStream succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("ExecStream: %v, want %v", err, tt.want)
			}
		})
	}
}

// hangingStream sends start and one chunk, then holds the stream open until
// the client leaves, and closes left then.
func hangingStream(left chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		sw := sse.NewWriter(w)
		_ = sw.Send(api.EventStart, api.ExecEvent{Type: api.EventStart})
		_ = sw.Send(api.EventStdout, api.ExecEvent{Type: api.EventStdout, Data: "tick\n"})
		<-r.Context().Done()
		close(left)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting: %s", what)
	}
}

func TestExecStreamContextCancel(t *testing.T) {
	left := make(chan struct{})
	sb := newStreamClient(t, hangingStream(left))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := sb.ExecStream(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for range 2 {
		if _, err := st.Next(); err != nil {
			t.Fatal(err)
		}
	}
	time.AfterFunc(20*time.Millisecond, cancel)
	if _, err := st.Next(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel: %v, want context.Canceled", err)
	}
	waitClosed(t, left, "the server to see the client leave")
}

func TestExecStreamCloseWhileWaiting(t *testing.T) {
	left := make(chan struct{})
	sb := newStreamClient(t, hangingStream(left))
	st, err := sb.ExecStream(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := st.Next(); err != nil {
			t.Fatal(err)
		}
	}
	time.AfterFunc(20*time.Millisecond, func() { st.Close() })
	_, err = st.Next()
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("Next after Close: %v, want a stream-closed error", err)
	}
	waitClosed(t, left, "the server to see the client leave")
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestExecStreamAll(t *testing.T) {
	body := event(api.ExecEvent{Type: "start"}) +
		event(api.ExecEvent{Type: "stdout", Data: "a"}) +
		event(api.ExecEvent{Type: "complete", ExitCode: intp(0)})
	sb := newStreamClient(t, streamOf(body))
	st, err := sb.ExecStream(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for ev, err := range st.All() {
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ev.Type)
	}
	if diff := cmp.Diff([]string{"start", "stdout", "complete"}, types); diff != "" {
		t.Errorf("event types (-want +got):\n%s", diff)
	}
}

func TestExecStreamAllYieldsErrorsOnce(t *testing.T) {
	body := event(api.ExecEvent{Type: "start"}) +
		event(api.ExecEvent{Type: "error", Code: api.CodeSandboxUnavailable, Message: "agent died"})
	sb := newStreamClient(t, streamOf(body))
	st, err := sb.ExecStream(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	n := 0
	for _, err := range st.All() {
		n++
		if err != nil {
			errs = append(errs, err)
		}
	}
	if n != 2 || len(errs) != 1 || !errors.Is(errs[0], ErrUnavailable) {
		t.Errorf("All yielded %d events and errors %v; want 2 events, one ErrUnavailable", n, errs)
	}
}

func TestExecStreamAllBreakClosesStream(t *testing.T) {
	left := make(chan struct{})
	sb := newStreamClient(t, hangingStream(left))
	st, err := sb.ExecStream(t.Context(), "c")
	if err != nil {
		t.Fatal(err)
	}
	for ev, err := range st.All() {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == api.EventStdout {
			break
		}
	}
	waitClosed(t, left, "breaking out of All to close the stream")
}

func TestExecWithCallbacks(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("\xfe"))
	body := event(api.ExecEvent{Type: "start", Command: "c", SessionID: "s1"}) +
		event(api.ExecEvent{Type: "stdout", Data: "one "}) +
		event(api.ExecEvent{Type: "stderr", Data: "warn"}) +
		event(api.ExecEvent{Type: "stdout", Data: b64, Encoding: "base64"}) +
		event(api.ExecEvent{Type: "complete", ExitCode: intp(0), Duration: 7})
	var gotReq api.ExecRequest
	sb := newStreamClient(t, func(w http.ResponseWriter, r *http.Request) {
		gotReq = decodeBody[api.ExecRequest](t, r)
		streamOf(body)(w, r)
	})
	var order []string
	res, err := sb.Exec(t.Context(), "c", InSession("s1"), WithCallbacks(Callbacks{
		OnStdout: func(b []byte) { order = append(order, "out:"+string(b)) },
		OnStderr: func(b []byte) { order = append(order, "err:"+string(b)) },
	}))
	if err != nil {
		t.Fatal(err)
	}
	if gotReq.SessionID != "s1" {
		t.Errorf("request session = %q, want s1", gotReq.SessionID)
	}
	if diff := cmp.Diff([]string{"out:one ", "err:warn", "out:\xfe"}, order); diff != "" {
		t.Errorf("callbacks (-want +got):\n%s", diff)
	}
	want := api.ExecResult{Success: true, ExitCode: 0, Stdout: "one \xfe", Stderr: "warn", Command: "c", SessionID: "s1", Duration: 7}
	if diff := cmp.Diff(want, res.ExecResult); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
}

func TestCollectErrorEventGivesPartialResult(t *testing.T) {
	body := event(api.ExecEvent{Type: "start", Command: "c"}) +
		event(api.ExecEvent{Type: "stdout", Data: "tick\n"}) +
		event(api.ExecEvent{Type: "error", Code: api.CodeCommandTimeout, Message: "ran past 1s"})
	sb := newStreamClient(t, streamOf(body))
	res, err := sb.Exec(t.Context(), "c", WithCallbacks(Callbacks{}))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Exec: %v, want ErrTimeout", err)
	}
	if res == nil || res.Stdout != "tick\n" || res.Success || res.ExitCode != -1 {
		t.Errorf("partial result = %+v", res)
	}
}
