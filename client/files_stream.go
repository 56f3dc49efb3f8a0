package client

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// eventStream is the plumbing every event stream of the SDK shares (exec,
// code, process logs, watch, file reads, image builds, lifecycle events):
// an SSE body that ends with its terminal event by the one rule of the
// API (api.IsTerminal: complete, exit or error, by name alone), is closed
// once, and reports the context's error when the context ends it. what
// names the stream in errors ("exec stream").
type eventStream struct {
	ctx       context.Context
	body      io.ReadCloser
	r         *sse.Reader
	what      string
	closeOnce sync.Once
	closed    atomic.Bool

	// err is what Next returns once the stream has ended: io.EOF after its
	// terminal event, otherwise the error that ended it.
	err error
}

// openEvents posts in to suffix and returns the event stream.
func (s *Sandbox) openEvents(ctx context.Context, suffix string, in any, what string) (*eventStream, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	path := sandboxPath(s.id, suffix)
	resp, err := s.c.send(ctx, http.MethodPost, path, in, sse.ContentType)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != sse.ContentType {
		closeBody(resp.Body)
		return nil, fmt.Errorf("POST %s: answer is %q, not an event stream", path, resp.Header.Get("Content-Type"))
	}
	es := newEventStream(what, ctx, resp.Body)
	return &es, nil
}

// nextRaw returns the next event. After a terminal event the stream is
// over: its body is closed and later calls return io.EOF. A stream that
// breaks, or ends without a terminal event, ends with readError's error.
func (es *eventStream) nextRaw() (sse.Event, error) {
	if es.err != nil {
		return sse.Event{}, es.err
	}
	raw, err := es.r.Next()
	if err != nil {
		return sse.Event{}, es.fail(es.readError(err))
	}
	if api.IsTerminal(raw.Name) {
		es.finish()
	}
	return raw, nil
}

// next decodes the next event into v and returns its name (see nextRaw).
func (es *eventStream) next(v any) (string, error) {
	raw, err := es.nextRaw()
	if err != nil {
		return "", err
	}
	if err := raw.Decode(v); err != nil {
		return "", es.fail(fmt.Errorf("decoding %s %s event: %w", es.what, raw.Name, err))
	}
	return raw.Name, nil
}

// decodeChunk turns an output chunk's data into raw bytes.
func (es *eventStream) decodeChunk(data *string, encoding *string) error {
	if *encoding == api.EncodingBase64 {
		b, err := base64.StdEncoding.DecodeString(*data)
		if err != nil {
			return es.fail(fmt.Errorf("decoding %s chunk: %w", es.what, err))
		}
		*data = string(b)
	}
	*encoding = ""
	return nil
}

// Watch is a live watch of a path: its events, in order, until the watch
// breaks (an error) or is closed. Closing it, or cancelling the context it
// was opened with, releases the watch in the sandbox.
//
// Next and Events must be called from one goroutine at a time; Close may be
// called from any goroutine, also while Next waits.
type Watch struct {
	es *eventStream
	// Path is the absolute path watched.
	Path string
	err  error
}

// Watch watches path (a directory, or a file) and returns once the watch
// is in place: every change after Watch returns is reported. Recursive
// covers the whole tree (directories created later included); Include and
// Exclude filter by glob. A sandbox has at most api.MaxWatches watches
// (RESOURCE_EXHAUSTED beyond).
func (s *Sandbox) Watch(ctx context.Context, path string, opts ...FileOption) (*Watch, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	es, err := s.openEvents(ctx, "/files/watch", &api.WatchRequest{
		Path: path, Recursive: c.recursive, Include: c.include, Exclude: c.exclude, SessionID: c.session,
	}, "watch stream")
	if err != nil {
		return nil, err
	}
	var first api.WatchEvent
	if _, err := es.next(&first); err != nil {
		es.Close()
		return nil, err
	}
	switch first.Type {
	case api.WatchEventWatching:
		return &Watch{es: es, Path: first.Path}, nil
	case api.EventError:
		es.Close()
		return nil, &Error{Code: first.Code, Message: first.Message}
	}
	es.Close()
	return nil, fmt.Errorf("watch stream opened with %q, not watching", first.Type)
}

// Next returns the next change (an event of type api.WatchEventEvent).
// When the watch breaks, Next returns an *Error: WATCH_OVERFLOW when
// events were lost (list again and watch anew), FILE_NOT_FOUND when the
// watched path went away. After the context is cancelled, Next returns
// its error.
func (w *Watch) Next() (api.WatchEvent, error) {
	if w.err != nil {
		return api.WatchEvent{}, w.err
	}
	for {
		var ev api.WatchEvent
		name, err := w.es.next(&ev)
		if err != nil {
			w.err = err
			w.es.Close()
			return api.WatchEvent{}, err
		}
		if ev.Type == "" {
			ev.Type = name
		}
		switch {
		case name == api.EventError:
			w.err = &Error{Code: ev.Code, Message: ev.Message}
			return ev, w.err
		case api.IsTerminal(name):
			// No other terminal event is defined for a watch.
			w.err = fmt.Errorf("watch stream ended with %q: %w", name, ErrUnavailable)
			return api.WatchEvent{}, w.err
		case ev.Type == api.WatchEventEvent:
			return ev, nil
		}
		// Unknown event types are for newer clients.
	}
}

// Events returns an iterator over the changes, for use with range. It
// stops at the first error (which it yields) and closes the watch when the
// loop ends.
func (w *Watch) Events() iter.Seq2[api.WatchEvent, error] {
	return func(yield func(api.WatchEvent, error) bool) {
		defer w.Close()
		for {
			ev, err := w.Next()
			if !yield(ev, err) || err != nil {
				return
			}
		}
	}
}

// Close ends the watch. It is idempotent and always returns nil.
func (w *Watch) Close() error {
	w.es.Close()
	return nil
}

// CheckChanges polls path for changes since the version a previous call
// returned ("" for the first call), for clients that cannot hold a Watch
// open. The result's Status is api.ChangesUnchanged, api.ChangesChanged
// (with the Events) or api.ChangesResync (list the path again); pass its
// Version next time. Recursive, Include and Exclude apply, and must stay the
// same from one poll to the next.
func (s *Sandbox) CheckChanges(ctx context.Context, path, since string, opts ...FileOption) (*api.ChangesResult, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	var res api.ChangesResult
	if err := s.call(ctx, "/files/changes", &api.WatchRequest{
		Path: path, Recursive: c.recursive, Include: c.include, Exclude: c.exclude, Since: since, SessionID: c.session,
	}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// FileStream is a file read as events (the reference's readFileStream),
// presented as an io.Reader of its bytes. Close it.
type FileStream struct {
	es *eventStream
	// Metadata describes the file: Path, MimeType, Size, IsBinary.
	Metadata api.FileStreamEvent
	buf      []byte
	err      error
}

// ReadFileStream opens the file at path as a stream of chunks, with its
// metadata first. Read it like any io.Reader: it ends with io.EOF after the
// complete event, or with the error the stream reported.
func (s *Sandbox) ReadFileStream(ctx context.Context, path string, opts ...FileOption) (*FileStream, error) {
	if err := checkPath(path, "path"); err != nil {
		return nil, err
	}
	c := newFileConfig(opts)
	es, err := s.openEvents(ctx, "/files/read/stream", &api.ReadFileRequest{Path: path, Encoding: c.encoding, SessionID: c.session}, "file stream")
	if err != nil {
		return nil, err
	}
	var meta api.FileStreamEvent
	if _, err := es.next(&meta); err != nil {
		es.Close()
		return nil, err
	}
	if meta.Type != api.FileEventMetadata {
		es.Close()
		if meta.Type == api.EventError {
			return nil, &Error{Code: meta.Code, Message: meta.Message}
		}
		return nil, fmt.Errorf("file stream opened with %q, not metadata", meta.Type)
	}
	return &FileStream{es: es, Metadata: meta}, nil
}

// Read reads the file's bytes.
func (f *FileStream) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		var ev api.FileStreamEvent
		name, err := f.es.next(&ev)
		if err != nil {
			f.err = err
			continue
		}
		switch name {
		case api.FileEventChunk:
			if err := f.es.decodeChunk(&ev.Data, &ev.Encoding); err != nil {
				f.err = err
				continue
			}
			f.buf = []byte(ev.Data)
		case api.EventComplete:
			f.err = io.EOF
		case api.EventError:
			f.err = &Error{Code: ev.Code, Message: ev.Message}
		default:
			if api.IsTerminal(name) {
				f.err = fmt.Errorf("file stream ended with %q: %w", name, ErrUnavailable)
			}
		}
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

// Close ends the stream.
func (f *FileStream) Close() error {
	f.es.Close()
	return nil
}

// GitOption sets an option of GitCheckout.
type GitOption interface {
	applyGit(*gitConfig)
}

type gitConfig struct {
	req     api.GitCheckoutRequest
	timeout time.Duration
}

type gitOptionFunc func(*gitConfig)

func (f gitOptionFunc) applyGit(c *gitConfig) { f(c) }

// WithBranch checks out this branch or tag instead of the remote's
// default.
func WithBranch(branch string) GitOption {
	return gitOptionFunc(func(c *gitConfig) { c.req.Branch = branch })
}

// WithDepth makes a shallow clone of that many commits.
func WithDepth(depth int) GitOption {
	return gitOptionFunc(func(c *gitConfig) { c.req.Depth = depth })
}

// WithTargetDir clones into dir instead of /workspace/<repository name>
// (relative: against the session's working directory).
func WithTargetDir(dir string) GitOption {
	return gitOptionFunc(func(c *gitConfig) { c.req.TargetDir = dir })
}

// WithCloneTimeout stops the clone after d (default 10 minutes, at most
// api.MaxTimeout).
func WithCloneTimeout(d time.Duration) GitOption {
	return gitOptionFunc(func(c *gitConfig) { c.timeout = d })
}

// GitCheckout clones repoURL (http, https or git) into the sandbox, like
// the reference's gitCheckout. Credentials may be in the URL
// (https://user:token@host/repo.git): they are used for this clone only,
// and never stored, logged or shown on a command line. Errors carry the
// codes INVALID_GIT_URL, GIT_REPOSITORY_NOT_FOUND, GIT_BRANCH_NOT_FOUND,
// GIT_AUTH_FAILED, GIT_NETWORK_ERROR and GIT_CLONE_FAILED.
func (s *Sandbox) GitCheckout(ctx context.Context, repoURL string, opts ...GitOption) (*api.GitCheckoutResult, error) {
	c := &gitConfig{req: api.GitCheckoutRequest{RepoURL: repoURL}}
	for _, o := range opts {
		o.applyGit(c)
	}
	switch {
	case repoURL == "" || len(repoURL) > api.MaxGitURLBytes:
		return nil, invalidf(api.CodeInvalidGitURL, "the repository URL is empty or longer than %d bytes", api.MaxGitURLBytes)
	case c.req.Depth < 0:
		return nil, invalidf(api.CodeValidationFailed, "depth %d is negative", c.req.Depth)
	case c.timeout < 0 || c.timeout > api.MaxTimeout:
		return nil, invalidf(api.CodeValidationFailed, "timeout %s is out of range (0 to %s)", c.timeout, api.MaxTimeout)
	}
	if c.timeout > 0 {
		c.req.Timeout = int64((c.timeout + time.Millisecond - 1) / time.Millisecond)
	}
	var res api.GitCheckoutResult
	if err := s.call(ctx, "/git/checkout", &c.req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}
