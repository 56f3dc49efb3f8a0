package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// Errors of the code interpreter; see Error.Is.
var (
	// ErrContextTerminated: CONTEXT_TERMINATED. The code context's
	// interpreter died (a crash, os._exit); it lost its state. Delete it
	// and create another; a default context is replaced by the next
	// RunCode that names no context.
	ErrContextTerminated = errors.New("code context terminated")
	// ErrNotAvailable: PYTHON_NOT_AVAILABLE, JAVASCRIPT_NOT_AVAILABLE, any
	// *_NOT_AVAILABLE code, UNSUPPORTED_BY_RUNTIME; HTTP 501. The
	// sandbox's image lacks what the call needs (the message says what to
	// install), or its runtime (gVisor) cannot do it.
	ErrNotAvailable = errors.New("not available")
)

// CodeContextOptions are the settings of a new code context. Every field
// is optional.
type CodeContextOptions struct {
	// Language is api.LanguagePython (default), api.LanguageJavaScript or
	// api.LanguageTypeScript.
	Language api.CodeLanguage
	// Cwd is the interpreter's working directory, an existing absolute
	// path; default /workspace.
	Cwd string
	// Env is added to the interpreter's environment.
	Env map[string]string
}

// CreateCodeContext starts a code context: an interpreter whose state
// (variables, imports, functions) persists across RunCode calls that name
// it, and never leaks to another context.
func (s *Sandbox) CreateCodeContext(ctx context.Context, o CodeContextOptions) (*api.CodeContext, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	if len(o.Env) > api.MaxEnvVars {
		return nil, invalidf(api.CodeValidationFailed, "%d environment variables; at most %d are allowed", len(o.Env), api.MaxEnvVars)
	}
	req := api.CreateCodeContextRequest{Language: o.Language, Cwd: o.Cwd, Env: o.Env}
	var c api.CodeContext
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/code/contexts"), &req, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// ListCodeContexts returns the sandbox's code contexts, oldest first, the
// default ones included.
func (s *Sandbox) ListCodeContexts(ctx context.Context) ([]api.CodeContext, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var l api.CodeContextList
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/code/contexts"), nil, &l); err != nil {
		return nil, err
	}
	return l.Contexts, nil
}

// CodeContext returns one code context; an unknown ID gives an error
// matching ErrNotFound.
func (s *Sandbox) CodeContext(ctx context.Context, id string) (*api.CodeContext, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var c api.CodeContext
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/code/contexts/"+url.PathEscape(id)), nil, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// DeleteCodeContext deletes a code context and kills its interpreter and
// everything it started. An unknown ID gives an error matching
// ErrNotFound.
func (s *Sandbox) DeleteCodeContext(ctx context.Context, id string) error {
	if err := s.prepare(ctx); err != nil {
		return err
	}
	return s.c.doJSON(ctx, http.MethodDelete, sandboxPath(s.id, "/code/contexts/"+url.PathEscape(id)), nil, nil)
}

// RunCodeOptions are the settings of one run. Every field is optional.
type RunCodeOptions struct {
	// Context is the ID of the code context to run in. Without it the
	// default context of Language is used, created on first use.
	Context string
	// Language is used without Context: api.LanguagePython (default),
	// api.LanguageJavaScript or api.LanguageTypeScript.
	Language api.CodeLanguage
	// Timeout interrupts the run (default api.DefaultCodeTimeout); the run
	// then reports a TimeoutError and the context keeps its state. Sent
	// in whole milliseconds, rounded up; at most api.MaxTimeout.
	Timeout time.Duration
	// Callbacks are called as the run's events arrive, in order.
	CodeCallbacks
}

// CodeCallbacks receive a run's events as they arrive. Nil fields are
// skipped; each call gets values the callback may keep.
type CodeCallbacks struct {
	OnStdout func(data []byte)
	OnStderr func(data []byte)
	OnResult func(r api.CodeResult)
	// OnError gets an error raised by the code (not an API error).
	OnError func(e api.ExecutionError)
}

func newRunCodeRequest(code string, o RunCodeOptions) (*api.RunCodeRequest, error) {
	switch {
	case strings.TrimSpace(code) == "":
		return nil, invalidf(api.CodeValidationFailed, "code is empty")
	case len(code) > api.MaxCodeBytes:
		return nil, invalidf(api.CodeValidationFailed, "code is %d bytes; at most %d are allowed", len(code), api.MaxCodeBytes)
	case o.Timeout < 0 || o.Timeout > api.MaxTimeout:
		return nil, invalidf(api.CodeValidationFailed, "timeout %s is out of range (0 to %s)", o.Timeout, api.MaxTimeout)
	}
	req := &api.RunCodeRequest{Code: code, ContextID: o.Context, Language: o.Language}
	if o.Timeout > 0 {
		req.Timeout = int64((o.Timeout + time.Millisecond - 1) / time.Millisecond)
	}
	return req, nil
}

// RunCode runs code and returns the whole result once the run ends,
// calling o's callbacks as events arrive. An error raised by the code is
// not an error of RunCode: it is in the result's Error field (and goes to
// OnError). RunCode fails when the run could not complete: its context is
// unknown (ErrNotFound) or died during the run (ErrContextTerminated), the
// language is not installed (ErrNotAvailable), the daemon went away
// (ErrUnavailable); then it returns the partial result too.
//
//	res, err := sb.RunCode(ctx, "import math; math.pi * 5 ** 2", client.RunCodeOptions{})
//	fmt.Println(res.Results[0].Text) // 78.53981633974483
func (s *Sandbox) RunCode(ctx context.Context, code string, o RunCodeOptions) (*api.RunCodeResult, error) {
	st, err := s.RunCodeStream(ctx, code, o)
	if err != nil {
		return nil, err
	}
	return st.Collect(o.CodeCallbacks)
}

// RunCodeStream starts a run and returns its live events. The caller must
// Close the stream (All and Collect do); closing it or cancelling ctx
// interrupts the run (the context keeps its state). The callbacks of o are
// not used here; pass them to Collect.
func (s *Sandbox) RunCodeStream(ctx context.Context, code string, o RunCodeOptions) (*CodeStream, error) {
	req, err := newRunCodeRequest(code, o)
	if err != nil {
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	path := sandboxPath(s.id, "/code/run/stream")
	resp, err := s.c.send(ctx, http.MethodPost, path, req, sse.ContentType)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != sse.ContentType {
		closeBody(resp.Body)
		return nil, fmt.Errorf("POST %s: answer is %q, not an event stream", path, resp.Header.Get("Content-Type"))
	}
	return &CodeStream{eventStream: newEventStream("code stream", ctx, resp.Body), code: code}, nil
}

// CodeStream is the live event stream of one run: start, then stdout,
// stderr, result and execution_error events in the order they happened,
// then exactly one terminal event: complete, or error (an API error with
// its code).
//
// Next, All and Collect must be called from one goroutine at a time; Close
// may be called from any goroutine.
type CodeStream struct {
	eventStream
	code string
}

// Next returns the next event. Output chunks come with Data holding the
// raw bytes (Encoding is then empty). After the terminal event Next
// returns io.EOF. A terminal error event is returned with an *Error made
// of its code (errors.Is(err, ErrContextTerminated) and the like). A
// stream that ends without a terminal event gives an error matching
// ErrUnavailable.
func (st *CodeStream) Next() (api.CodeEvent, error) {
	var ev api.CodeEvent
	name, err := st.next(&ev)
	if err != nil {
		return api.CodeEvent{}, err
	}
	ev.Type = name
	switch name {
	case api.CodeEventStdout, api.CodeEventStderr:
		if err := st.decodeChunk(&ev.Data, &ev.Encoding); err != nil {
			return api.CodeEvent{}, err
		}
	case api.CodeEventError:
		return ev, &Error{Code: ev.Code, Message: ev.Message}
	case api.CodeEventExecutionError:
		if ev.Error == nil {
			return api.CodeEvent{}, st.fail(fmt.Errorf("code stream: execution_error event without error: %w", ErrUnavailable))
		}
	case api.CodeEventResult:
		if ev.Result == nil {
			return api.CodeEvent{}, st.fail(fmt.Errorf("code stream: result event without result: %w", ErrUnavailable))
		}
	case api.CodeEventComplete:
	default:
		if api.IsTerminal(name) {
			return api.CodeEvent{}, st.fail(fmt.Errorf("code stream ended with %q: %w", name, ErrUnavailable))
		}
	}
	return ev, nil
}

// All returns an iterator over the events, for use with range. It yields
// what Next returns, stops after the terminal event or the first error
// (which it yields), and closes the stream when the loop ends.
func (st *CodeStream) All() iter.Seq2[api.CodeEvent, error] {
	return func(yield func(api.CodeEvent, error) bool) {
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

// Collect reads the stream to its end, calling cb for each event, and
// returns the whole result: logs split into lines, results in order, the
// code's error if it raised one. It closes the stream. If the stream ends
// with an API error (or a lost connection, or a cancelled context) it
// returns the result so far together with that error.
func (st *CodeStream) Collect(cb CodeCallbacks) (*api.RunCodeResult, error) {
	defer st.Close()
	res := &api.RunCodeResult{Code: st.code, Results: []api.CodeResult{}}
	var stdout, stderr strings.Builder
	var err error
	for {
		var ev api.CodeEvent
		ev, err = st.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			break
		}
		switch ev.Type {
		case api.CodeEventStart:
			res.ContextID, res.Language = ev.ContextID, ev.Language
		case api.CodeEventStdout:
			stdout.WriteString(ev.Data)
			if cb.OnStdout != nil {
				cb.OnStdout([]byte(ev.Data))
			}
		case api.CodeEventStderr:
			stderr.WriteString(ev.Data)
			if cb.OnStderr != nil {
				cb.OnStderr([]byte(ev.Data))
			}
		case api.CodeEventResult:
			res.Results = append(res.Results, *ev.Result)
			if cb.OnResult != nil {
				cb.OnResult(*ev.Result)
			}
		case api.CodeEventExecutionError:
			e := *ev.Error
			res.Error = &e
			if cb.OnError != nil {
				cb.OnError(e)
			}
		case api.CodeEventComplete:
			res.ExecutionCount, res.Duration, res.Truncated = ev.ExecutionCount, ev.Duration, ev.Truncated
		}
	}
	res.Logs = api.CodeLogs{Stdout: lines(stdout.String()), Stderr: lines(stderr.String())}
	return res, err
}

// lines splits output into lines without terminators, as the daemon's
// buffered results do.
func lines(s string) []string {
	if s == "" {
		return []string{}
	}
	out := strings.Split(strings.ToValidUTF8(s, "\uFFFD"), "\n")
	if out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	for i, l := range out {
		out[i] = strings.TrimSuffix(l, "\r")
	}
	return out
}
