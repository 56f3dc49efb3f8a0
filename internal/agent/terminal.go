package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/pty"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// Terminal timing.
const (
	// terminalWriteTimeout bounds the delivery of one frame to a client; a
	// client that takes longer is cut off.
	terminalWriteTimeout = 30 * time.Second
	// terminalPingInterval is how often an attached client is pinged, so
	// that a vanished one (a half-open connection) is noticed.
	terminalPingInterval = 30 * time.Second
	// snapshotTimeout bounds the wait for a session's state when a
	// terminal starts in a session.
	snapshotTimeout = 5 * time.Second
	// maxSnapshotBytes bounds a session's environment and directory.
	maxSnapshotBytes = 1 << 20
	maxShellPath     = 256
)

// terminalRequest is a validated GET /terminal.
type terminalRequest struct {
	opts pty.Options
}

// parseTerminalQuery validates the query of GET /terminal. It is the one
// place where terminal requests are validated.
func parseTerminalQuery(q url.Values) (terminalRequest, *api.Error) {
	invalid := func(format string, args ...any) (terminalRequest, *api.Error) {
		return terminalRequest{}, api.Errorf(api.CodeValidationFailed, format, args...)
	}
	for k, v := range q {
		switch k {
		case "terminal", "session", "shell", "cols", "rows", "idleTimeout":
			if len(v) != 1 {
				return invalid("%s is given %d times", k, len(v))
			}
		default:
			return invalid("unknown parameter %q", k)
		}
	}
	o := pty.Options{Session: q.Get("session"), ID: q.Get("terminal"), Shell: q.Get("shell"),
		Cols: api.DefaultTerminalCols, Rows: api.DefaultTerminalRows, IdleTimeout: api.DefaultTerminalIdleTimeout}
	if o.Session != "" && !session.ValidID(o.Session) {
		return invalid("session %q: want 1-64 of A-Za-z0-9._- starting with a letter or digit", o.Session)
	}
	if o.ID == "" {
		o.ID = o.Session
		if o.ID == "" {
			o.ID = api.DefaultSession
		}
	}
	if !session.ValidID(o.ID) {
		return invalid("terminal %q: want 1-64 of A-Za-z0-9._- starting with a letter or digit", o.ID)
	}
	for _, f := range []struct {
		name string
		v    *int
	}{{"cols", &o.Cols}, {"rows", &o.Rows}} {
		if s := q.Get(f.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > api.MaxTerminalSize {
				return invalid("%s %q: want 1 to %d", f.name, s, api.MaxTerminalSize)
			}
			*f.v = n
		}
	}
	if s := q.Get("idleTimeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 || ms > api.MaxTerminalIdleTimeout.Milliseconds() {
			return invalid("idleTimeout %q: want 0 to %d milliseconds", s, api.MaxTerminalIdleTimeout.Milliseconds())
		}
		if ms > 0 {
			o.IdleTimeout = time.Duration(ms) * time.Millisecond
		}
	}
	if o.Shell != "" {
		if len(o.Shell) > maxShellPath || !filepath.IsAbs(o.Shell) || strings.ContainsRune(o.Shell, 0) {
			return invalid("shell must be an absolute path of at most %d bytes", maxShellPath)
		}
	}
	return terminalRequest{opts: o}, nil
}

// defaultShell is bash if the sandbox has it, else sh.
func defaultShell() string {
	if fi, err := os.Stat("/bin/bash"); err == nil && fi.Mode().IsRegular() {
		return "/bin/bash"
	}
	return "/bin/sh"
}

// terminal serves GET /terminal: a WebSocket to a shell on a
// pseudo-terminal (see api.TerminalMessage for the frames).
func (s *server) terminal(w http.ResponseWriter, r *http.Request) {
	req, aerr := parseTerminalQuery(r.URL.Query())
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		writeError(w, api.Errorf(api.CodeValidationFailed, "this route is a WebSocket: send an upgrade request"))
		return
	}
	o := req.opts
	if o.Shell == "" {
		o.Shell = defaultShell()
	}
	if fi, err := os.Stat(o.Shell); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		writeError(w, api.Errorf(api.CodeValidationFailed, "shell %q is not an executable file in the sandbox", o.Shell))
		return
	}
	client, created, err := s.terminals.Attach(o, func(o *pty.Options) error {
		return s.terminalEnv(r.Context(), o)
	})
	if err != nil {
		writeError(w, s.terminalError(err))
		return
	}
	defer client.Detach()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{api.TerminalSubprotocol},
		// The agent is reached only through the daemon, which
		// authenticated the request with a bearer token (never a cookie),
		// so a cross-site page cannot ride on a browser's credentials.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(api.MaxTerminalFrameBytes)
	info := client.Info()
	s.log.DebugContext(r.Context(), "terminal attached", "terminal", info.ID, "created", created)

	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	if err := writeControl(ctx, conn, api.TerminalMessage{Type: api.TerminalReady, Terminal: info.ID,
		Session: info.Session, PID: info.PID, Cols: info.Cols, Rows: info.Rows, Created: created}); err != nil {
		return
	}
	go s.terminalInput(ctx, cancel, conn, client)
	go pingLoop(ctx, cancel, conn)
	for {
		chunk, err := client.Next(ctx)
		var exit *pty.ExitError
		switch {
		case errors.As(err, &exit):
			code := exit.Code
			writeControl(ctx, conn, api.TerminalMessage{Type: api.TerminalExit, ExitCode: &code})
			conn.Close(websocket.StatusNormalClosure, "the shell exited")
			return
		case errors.Is(err, pty.ErrOverflow):
			writeControl(ctx, conn, api.TerminalMessage{Type: api.TerminalError, Code: api.CodeResourceExhausted,
				Message: "this client fell too far behind the terminal's output; attach again to get the recent screen"})
			conn.Close(websocket.StatusPolicyViolation, "too slow")
			return
		case err != nil:
			return // the client went away
		}
		wctx, wcancel := context.WithTimeout(ctx, terminalWriteTimeout)
		err = conn.Write(wctx, websocket.MessageBinary, chunk)
		wcancel()
		if err != nil {
			return
		}
	}
}

// terminalInput relays a client's frames: bytes to the terminal, control
// messages to their effect. Only the client's going away ends it: bytes
// typed after the shell exited (the CLI's Ctrl-D at the end of piped
// input) fail to write and are dropped, and the output loop, not this
// one, ends the connection with the exit frame.
func (s *server) terminalInput(ctx context.Context, cancel func(), conn *websocket.Conn, client *pty.Client) {
	defer cancel()
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			client.Write(data)
			continue
		}
		var msg api.TerminalMessage
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&msg); err != nil {
			writeControl(ctx, conn, api.TerminalMessage{Type: api.TerminalError, Code: api.CodeInvalidJSON,
				Message: "a text frame must be one JSON control message"})
			continue
		}
		switch {
		case msg.Type != api.TerminalResize:
			writeControl(ctx, conn, api.TerminalMessage{Type: api.TerminalError, Code: api.CodeValidationFailed,
				Message: fmt.Sprintf("unknown control message %q; clients send %q", msg.Type, api.TerminalResize)})
		case msg.Cols < 1 || msg.Cols > api.MaxTerminalSize || msg.Rows < 1 || msg.Rows > api.MaxTerminalSize:
			writeControl(ctx, conn, api.TerminalMessage{Type: api.TerminalError, Code: api.CodeValidationFailed,
				Message: fmt.Sprintf("resize: cols and rows must be 1 to %d", api.MaxTerminalSize)})
		default:
			if err := client.Resize(msg.Cols, msg.Rows); err != nil {
				s.log.Warn("resizing a terminal", "err", err)
			}
		}
	}
}

func pingLoop(ctx context.Context, cancel func(), conn *websocket.Conn) {
	t := time.NewTicker(terminalPingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, pcancel := context.WithTimeout(ctx, terminalWriteTimeout)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				cancel()
				return
			}
		}
	}
}

func writeControl(ctx context.Context, conn *websocket.Conn, msg api.TerminalMessage) error {
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, terminalWriteTimeout)
	defer cancel()
	return conn.Write(wctx, websocket.MessageText, data)
}

// terminalEnv fills in the environment and directory of a new terminal:
// the sandbox's environment in the workspace, or, for a session, the
// session's current exported variables and working directory.
func (s *server) terminalEnv(ctx context.Context, o *pty.Options) error {
	s.termEnvMu.Lock()
	env, dir := s.termBaseEnv, s.workspace
	s.termEnvMu.Unlock()
	if o.Session != "" {
		var err error
		if env, dir, err = s.sessionSnapshot(ctx, o.Session); err != nil {
			return err
		}
		// A session that runs as a user gets terminals as that user.
		if sess, err := s.sessions.Get(o.Session); err == nil {
			if acct := sess.Account(); acct != nil {
				uid, gid := acct.UID, acct.GID
				o.UID, o.GID = &uid, &gid
			}
		}
	}
	o.Env = terminalEnv(env, o.Shell)
	o.Dir = dir
	if _, err := os.Stat(o.Dir); err != nil {
		o.Dir = "/"
	}
	return nil
}

// terminalEnv is env for an interactive shell: the terminal type set, the
// variables a shell manages itself dropped, and a prompt that says where
// one is, unless env has one.
func terminalEnv(env []string, shell string) []string {
	out := make([]string, 0, len(env)+3)
	hasPS1 := false
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "TERM", "COLORTERM", "PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES":
			continue
		case "PS1":
			hasPS1 = true
		}
		out = append(out, kv)
	}
	out = append(out, "TERM=xterm-256color", "COLORTERM=truecolor")
	if !hasPS1 && filepath.Base(shell) == "bash" {
		out = append(out, `PS1=\u@\h:\w\$ `)
	}
	return out
}

// snapshotCommand prints the shell's working directory and exported
// environment, NUL-separated.
const snapshotCommand = `command printf '%s\0' "$PWD"; command env -0`

// sessionSnapshot returns a session's current exported environment and
// working directory, by asking its shell.
func (s *server) sessionSnapshot(ctx context.Context, id string) ([]string, string, error) {
	sess, err := s.sessions.Get(id)
	if err != nil {
		return nil, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	out := &bufferedOutput{limit: maxSnapshotBytes}
	res, err := sess.Exec(ctx, session.Command{Text: snapshotCommand, Timeout: snapshotTimeout}, out)
	if err != nil {
		return nil, "", err
	}
	if res.ExitCode != 0 || out.truncated {
		return nil, "", fmt.Errorf("reading the session's environment: exit %d", res.ExitCode)
	}
	fields := strings.Split(strings.TrimSuffix(string(out.stdout), "\x00"), "\x00")
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) {
		return nil, "", errors.New("reading the session's environment: no working directory")
	}
	var env []string
	for _, kv := range fields[1:] {
		if name, _, ok := strings.Cut(kv, "="); ok && session.ValidEnvName(name) && !strings.HasPrefix(name, PrivateEnvPrefix) {
			env = append(env, kv)
		}
	}
	return env, fields[0], nil
}

// terminalError classifies the errors of starting or attaching a
// terminal.
func (s *server) terminalError(err error) *api.Error {
	switch {
	case errors.Is(err, pty.ErrLimit), errors.Is(err, pty.ErrClients):
		return api.Errorf(api.CodeResourceExhausted, "%s", err.Error())
	case errors.Is(err, pty.ErrConflict):
		return api.Errorf(api.CodeTerminalConflict, "%s", err.Error())
	case errors.Is(err, pty.ErrClosed):
		return api.Errorf(api.CodeSandboxUnavailable, "the agent is shutting down")
	case errors.Is(err, session.ErrNotFound), errors.Is(err, session.ErrBusy), errors.Is(err, session.ErrClosed),
		errors.Is(err, session.ErrTerminated):
		return s.apiError(err)
	}
	var timeout *session.TimeoutError
	if errors.As(err, &timeout) {
		return api.Errorf(api.CodeSessionBusy, "the session did not answer within %s; is a command running in it?", snapshotTimeout)
	}
	s.log.Error("starting a terminal", "err", err)
	return api.Errorf(api.CodeInternal, "the terminal could not be started; see the agent's log")
}

// listTerminals serves GET /terminals.
func (s *server) listTerminals(w http.ResponseWriter, r *http.Request) {
	out := api.TerminalList{Terminals: []api.TerminalInfo{}}
	for _, t := range s.terminals.List() {
		out.Terminals = append(out.Terminals, api.TerminalInfo{ID: t.ID, Session: t.Session, Shell: t.Shell, PID: t.PID,
			Cols: t.Cols, Rows: t.Rows, Clients: t.Clients, CreatedAt: t.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

// closeTerminal serves DELETE /terminals/{terminal}: it hangs the
// terminal up; its clients get the exit.
func (s *server) closeTerminal(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("terminal")
	if !session.ValidID(id) {
		writeError(w, api.Errorf(api.CodeValidationFailed, "terminal %q is not a valid ID", id))
		return
	}
	if err := s.terminals.Close(id); err != nil {
		writeError(w, api.Errorf(api.CodeTerminalNotFound, "no terminal %q", id))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
