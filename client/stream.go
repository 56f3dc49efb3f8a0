package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func newEventStream(what string, ctx context.Context, body io.ReadCloser) eventStream {
	return eventStream{what: what, ctx: ctx, body: body, r: sse.NewReader(body)}
}

// readError explains why reading the stream failed.
func (st *eventStream) readError(err error) error {
	switch {
	case st.ctx.Err() != nil:
		return st.ctx.Err()
	case st.closed.Load():
		return fmt.Errorf("%s closed", st.what)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s ended before its terminal event: %w", st.what, ErrUnavailable)
	case errors.Is(err, sse.ErrEventTooLarge):
		return fmt.Errorf("reading %s: %w", st.what, err)
	}
	return fmt.Errorf("reading %s: %w: %w", st.what, ErrUnavailable, err)
}

// finish marks the stream as ended after its terminal event.
func (st *eventStream) finish() {
	st.err = io.EOF
	st.closeOnce.Do(func() { closeBody(st.body) })
}

// fail marks the stream as ended by err and returns err.
func (st *eventStream) fail(err error) error {
	st.err = err
	st.closeOnce.Do(func() { _ = st.body.Close() })
	return err
}

// Close ends the stream; what it was running on the daemon is stopped (a
// command is killed, a code run interrupted). Close is idempotent and
// always returns nil.
func (st *eventStream) Close() error {
	st.closed.Store(true)
	st.closeOnce.Do(func() { _ = st.body.Close() })
	return nil
}

// ExecStream is the live output of one command: a start event, any number
// of stdout and stderr events, then exactly one terminal event, complete
// (with the exit code) or error. Closing the stream, or cancelling the
// context it was opened with, ends the connection, and the daemon then kills
// the command.
//
// Next, All and Collect must be called from one goroutine at a time; Close
// may be called from any goroutine, also while Next waits.
type ExecStream struct {
	eventStream
}

// ExecStream starts command and returns its live output. The stream lives
// as long as ctx: cancelling ctx ends it. The caller must Close it (All and
// Collect do). WithCallbacks has no effect here; pass the callbacks to
// Collect instead.
func (s *Sandbox) ExecStream(ctx context.Context, command string, opts ...ExecOption) (*ExecStream, error) {
	cfg, err := newExecConfig(command, opts)
	if err != nil {
		return nil, err
	}
	return s.execStream(ctx, cfg)
}

func (s *Sandbox) execStream(ctx context.Context, cfg *execConfig) (*ExecStream, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	path := sandboxPath(s.id, "/exec/stream")
	resp, err := s.c.send(ctx, http.MethodPost, path, &cfg.req, sse.ContentType)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != sse.ContentType {
		closeBody(resp.Body)
		return nil, fmt.Errorf("POST %s: answer is %q, not an event stream", path, resp.Header.Get("Content-Type"))
	}
	return &ExecStream{newEventStream("exec stream", ctx, resp.Body)}, nil
}

// Next returns the next event. Output chunks come with Data holding the raw
// bytes, whatever their encoding on the wire (Encoding is then empty).
//
// After the terminal event, Next returns io.EOF. For an error event, Next
// returns the event and an *Error made of its code and message, so that
// errors.Is(err, ErrTimeout) and the like work. A stream that ends without
// a terminal event gives an error matching ErrUnavailable: the command's
// fate is unknown, and it is never reported as completed. After the context
// is cancelled, Next returns the context's error.
func (st *ExecStream) Next() (api.ExecEvent, error) {
	var ev api.ExecEvent
	name, err := st.next(&ev)
	if err != nil {
		return api.ExecEvent{}, err
	}
	ev.Type = name
	switch name {
	case api.EventStdout, api.EventStderr:
		if err := st.decodeChunk(&ev.Data, &ev.Encoding); err != nil {
			return api.ExecEvent{}, err
		}
	case api.EventComplete:
		if ev.ExitCode == nil {
			return api.ExecEvent{}, st.fail(fmt.Errorf("exec stream: complete event without exit code: %w", ErrUnavailable))
		}
	case api.EventError:
		return ev, &Error{Code: ev.Code, Message: ev.Message}
	default:
		if api.IsTerminal(name) {
			return api.ExecEvent{}, st.fail(fmt.Errorf("exec stream ended with %q: %w", name, ErrUnavailable))
		}
	}
	return ev, nil
}

// All returns an iterator over the stream's events, for use with range:
//
//	for ev, err := range st.All() {
//		if err != nil {
//			return err
//		}
//		...
//	}
//
// It yields what Next returns, stops after the terminal event or the first
// error (which it yields), and closes the stream when the loop ends, also
// when it ends early.
func (st *ExecStream) All() iter.Seq2[api.ExecEvent, error] {
	return func(yield func(api.ExecEvent, error) bool) {
		defer st.Close()
		for {
			ev, err := st.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if !yield(ev, err) || err != nil {
				return
			}
		}
	}
}

// Callbacks receive a command's output as it arrives; see Collect and
// WithCallbacks. Each call gets a fresh slice the callback may keep. Nil
// fields are skipped.
type Callbacks struct {
	OnStdout func(data []byte)
	OnStderr func(data []byte)
}

// Collect reads the stream to its end, calling cb for each output chunk,
// and returns the whole result, like Exec. It closes the stream. Output is
// kept up to api.MaxBufferedOutputBytes per stream (Truncated is set beyond
// that); the callbacks see all of it.
//
// Collect always returns a result. If the stream ends with an error (an
// error event, a lost connection, a cancelled context) it returns the result
// so far, with ExitCode -1, together with that error.
func (st *ExecStream) Collect(cb Callbacks) (*ExecResult, error) {
	defer st.Close()
	res := &ExecResult{ExecResult: api.ExecResult{ExitCode: -1}}
	var stdout, stderr bytes.Buffer
	keep := func(buf *bytes.Buffer, data []byte) {
		if room := api.MaxBufferedOutputBytes - buf.Len(); len(data) > room {
			data = data[:room]
			res.Truncated = true
		}
		buf.Write(data)
	}
	var err error
	for {
		var ev api.ExecEvent
		ev, err = st.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			break
		}
		switch ev.Type {
		case api.EventStart:
			res.Command, res.SessionID = ev.Command, ev.SessionID
		case api.EventStdout:
			data := []byte(ev.Data)
			keep(&stdout, data)
			if cb.OnStdout != nil {
				cb.OnStdout(data)
			}
		case api.EventStderr:
			data := []byte(ev.Data)
			keep(&stderr, data)
			if cb.OnStderr != nil {
				cb.OnStderr(data)
			}
		case api.EventComplete:
			res.ExitCode = *ev.ExitCode
			res.Success = res.ExitCode == 0
			res.ExecResult.Duration = ev.Duration
		}
	}
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	return res, err
}
