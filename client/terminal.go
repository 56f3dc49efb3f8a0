package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/sandboxd/sandboxd/api"
)

// TerminalOptions choose the terminal Sandbox.Terminal opens. Every field
// is optional.
type TerminalOptions struct {
	// ID names the terminal. A terminal of that ID that runs already is
	// attached to (several clients may share one; a new client first gets
	// its recent output); otherwise a shell starts. Default: Session,
	// else "default".
	ID string
	// Session starts the shell with that session's current exported
	// environment and working directory (default: the sandbox's
	// environment, in /workspace).
	Session string
	// Shell is the absolute path of the shell (default /bin/bash, else
	// /bin/sh).
	Shell string
	// Cols and Rows are the initial size (default 80x24, at most 1000).
	Cols, Rows int
	// IdleTimeout is how long the shell lives on after its last client
	// left (default 10 minutes, at most 24 hours).
	IdleTimeout time.Duration
}

// maxTerminalFrame bounds a frame from the daemon: live output comes in
// chunks of at most 32 KiB, the replay in one frame of at most 256 KiB.
const maxTerminalFrame = 1 << 20

// Terminal is an interactive shell on a pseudo-terminal in a sandbox: Read
// gets its output, Write sends it input (keystrokes: "\r" is Enter,
// "\x03" is Ctrl-C), Resize changes its size. Read returns io.EOF once the
// shell has exited and all its output was read; Wait then gives the exit
// code. Close detaches: the shell lives on for its idle time, and a later
// Terminal with the same ID attaches to it again.
type Terminal struct {
	conn   *websocket.Conn
	ready  api.TerminalMessage
	out    chan []byte
	closed chan struct{}
	done   chan struct{} // closed when the reader is over

	readMu  sync.Mutex
	pending []byte // guarded by readMu

	// Set by the reader before done is closed.
	exitCode *int
	err      error

	closeOnce sync.Once
}

// Terminal opens (or attaches to) an interactive terminal in the sandbox.
// Errors such as an unknown session (ErrNotFound) or too many terminals
// (ErrResourceExhausted) come back before any output.
func (s *Sandbox) Terminal(ctx context.Context, o TerminalOptions) (*Terminal, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	q := url.Values{}
	for k, v := range map[string]string{"terminal": o.ID, "session": o.Session, "shell": o.Shell} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for k, v := range map[string]int{"cols": o.Cols, "rows": o.Rows} {
		if v < 0 || v > api.MaxTerminalSize {
			return nil, invalidf(api.CodeValidationFailed, "%s %d is out of range (1 to %d)", k, v, api.MaxTerminalSize)
		}
		if v > 0 {
			q.Set(k, strconv.Itoa(v))
		}
	}
	if o.IdleTimeout < 0 || o.IdleTimeout > api.MaxTerminalIdleTimeout {
		return nil, invalidf(api.CodeValidationFailed, "idle timeout %s is out of range (0 to %s)", o.IdleTimeout, api.MaxTerminalIdleTimeout)
	}
	if o.IdleTimeout > 0 {
		q.Set("idleTimeout", strconv.FormatInt(max(o.IdleTimeout.Milliseconds(), 1), 10))
	}
	u := *s.c.base
	u.Path += sandboxPath(s.id, "/terminal")
	u.RawQuery = q.Encode()
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	header := http.Header{}
	if s.c.token != "" {
		header.Set("Authorization", "Bearer "+s.c.token)
	}
	if s.c.userAgent != "" {
		header.Set("User-Agent", s.c.userAgent)
	}
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: s.c.http, HTTPHeader: header, Subprotocols: []string{api.TerminalSubprotocol},
	})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, readError(resp)
		}
		return nil, fmt.Errorf("%w: opening terminal: %w", ErrUnavailable, err)
	}
	conn.SetReadLimit(maxTerminalFrame)
	t := &Terminal{conn: conn, out: make(chan []byte, 64), closed: make(chan struct{}), done: make(chan struct{})}
	typ, data, err := conn.Read(ctx)
	if err == nil && typ == websocket.MessageText {
		err = json.Unmarshal(data, &t.ready)
	}
	if err != nil || t.ready.Type != api.TerminalReady {
		conn.CloseNow()
		if err == nil {
			err = fmt.Errorf("first frame is %q, not ready", t.ready.Type)
		}
		return nil, fmt.Errorf("%w: opening terminal: %w", ErrUnavailable, err)
	}
	go t.read()
	return t, nil
}

// Info is the server's ready message: the terminal's ID, session, the
// shell's PID, the size, and whether this call started the shell.
func (t *Terminal) Info() api.TerminalMessage { return t.ready }

// read receives frames until the connection ends.
func (t *Terminal) read() {
	defer close(t.done)
	defer close(t.out)
	var fatal *Error
	for {
		typ, data, err := t.conn.Read(context.Background())
		if err != nil {
			switch {
			case t.exitCode != nil:
				t.err = io.EOF
			case fatal != nil:
				t.err = fatal
			case isClosed(t.closed):
				t.err = errTerminalClosed
			default:
				t.err = fmt.Errorf("%w: the terminal's connection ended: %w", ErrUnavailable, err)
			}
			return
		}
		if typ == websocket.MessageBinary {
			select {
			case t.out <- data:
			case <-t.closed:
			}
			continue
		}
		var msg api.TerminalMessage
		if json.Unmarshal(data, &msg) != nil {
			continue
		}
		switch msg.Type {
		case api.TerminalExit:
			code := -1
			if msg.ExitCode != nil {
				code = *msg.ExitCode
			}
			t.exitCode = &code
		case api.TerminalError:
			// Remembered: if the server closes next, this is why.
			fatal = &Error{Code: msg.Code, Message: msg.Message}
		}
	}
}

var errTerminalClosed = errors.New("terminal closed")

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Read reads the terminal's output. It returns io.EOF after the shell
// exited, and an error matching ErrUnavailable if the connection broke
// first.
func (t *Terminal) Read(p []byte) (int, error) {
	t.readMu.Lock()
	defer t.readMu.Unlock()
	if len(t.pending) == 0 {
		chunk, ok := <-t.out
		if !ok {
			<-t.done
			return 0, t.err
		}
		t.pending = chunk
	}
	n := copy(p, t.pending)
	t.pending = t.pending[n:]
	return n, nil
}

// Write sends input to the terminal.
func (t *Terminal) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	// Frames stay within the server's limit.
	written := 0
	for len(p) > 0 {
		n := min(len(p), api.MaxTerminalFrameBytes)
		if err := t.conn.Write(context.Background(), websocket.MessageBinary, p[:n]); err != nil {
			return written, fmt.Errorf("%w: writing to the terminal: %w", ErrUnavailable, err)
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// Resize tells the terminal its new size; programs in it get SIGWINCH.
func (t *Terminal) Resize(cols, rows int) error {
	if cols < 1 || cols > api.MaxTerminalSize || rows < 1 || rows > api.MaxTerminalSize {
		return invalidf(api.CodeValidationFailed, "size %dx%d is out of range (1 to %d)", cols, rows, api.MaxTerminalSize)
	}
	data, _ := json.Marshal(api.TerminalMessage{Type: api.TerminalResize, Cols: cols, Rows: rows})
	if err := t.conn.Write(context.Background(), websocket.MessageText, data); err != nil {
		return fmt.Errorf("%w: resizing the terminal: %w", ErrUnavailable, err)
	}
	return nil
}

// Wait waits for the shell to exit and returns its exit code (128+n when
// a signal n killed it). Output that nobody reads is dropped meanwhile.
// It fails if the connection ends first or ctx is done.
func (t *Terminal) Wait(ctx context.Context) (int, error) {
	for {
		select {
		case _, ok := <-t.out:
			if ok {
				continue
			}
			<-t.done
			if t.exitCode != nil {
				return *t.exitCode, nil
			}
			return -1, t.err
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	}
}

// ExitCode returns the shell's exit code once Read has returned io.EOF.
func (t *Terminal) ExitCode() (int, bool) {
	select {
	case <-t.done:
		if t.exitCode != nil {
			return *t.exitCode, true
		}
	default:
	}
	return 0, false
}

// Close detaches from the terminal; the shell keeps running for its idle
// time. It is safe to call more than once.
func (t *Terminal) Close() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		t.conn.Close(websocket.StatusNormalClosure, "")
	})
	<-t.done
	return nil
}

// CloseTerminal hangs up the terminal id in the sandbox (SIGHUP to its
// shell); its clients get the exit. An unknown ID is TERMINAL_NOT_FOUND
// (ErrNotFound).
func (s *Sandbox) CloseTerminal(ctx context.Context, id string) error {
	if err := s.prepare(ctx); err != nil {
		return err
	}
	return s.c.doJSON(ctx, http.MethodDelete, sandboxPath(s.id, "/terminals/"+url.PathEscape(id)), nil, nil)
}

// Terminals lists the sandbox's running terminals.
func (s *Sandbox) Terminals(ctx context.Context) ([]api.TerminalInfo, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var out api.TerminalList
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/terminals"), nil, &out); err != nil {
		return nil, err
	}
	return out.Terminals, nil
}
