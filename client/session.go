package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// Session is a handle to one session of a sandbox: a persistent shell with
// its own environment, working directory, functions and aliases. Files
// and processes are shared by all sessions of a sandbox. Making a handle
// does no I/O.
type Session struct {
	sb *Sandbox
	id string
}

// SessionOption sets an option of CreateSession.
type SessionOption interface {
	applySession(*api.CreateSessionRequest)
}

type sessionOptionFunc func(*api.CreateSessionRequest)

func (f sessionOptionFunc) applySession(r *api.CreateSessionRequest) { f(r) }

func (e EnvOption) applySession(r *api.CreateSessionRequest) { r.Env = mergeMap(r.Env, e) }
func (d CwdOption) applySession(r *api.CreateSessionRequest) { r.Cwd = string(d) }

// WithSessionID names the session to create (default: generated).
func WithSessionID(id string) SessionOption {
	return sessionOptionFunc(func(r *api.CreateSessionRequest) { r.ID = id })
}

// WithCommandTimeout sets the timeout of the session's commands that set
// none of their own (whole milliseconds, rounded up).
func WithCommandTimeout(d time.Duration) SessionOption {
	return sessionOptionFunc(func(r *api.CreateSessionRequest) { r.CommandTimeout = roundMillis(d) })
}

// UserOption is returned by AsUser; it serves CreateSession and
// StartProcess.
type UserOption string

func (u UserOption) applySession(r *api.CreateSessionRequest) { r.User = string(u) }
func (u UserOption) applyProcess(r *api.StartProcessRequest)  { r.User = string(u) }

// AsUser runs the session (or the process) as this user of the sandbox,
// created on demand with a home directory.
func AsUser(name string) UserOption { return UserOption(name) }

func roundMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// Session returns a handle to the session id. Nothing is checked until a
// call: an unknown session answers ErrNotFound.
func (s *Sandbox) Session(id string) *Session { return &Session{sb: s, id: id} }

// CreateSession creates a session and returns its handle, like the
// reference SDK's createSession. An existing ID fails with an error
// matching ErrConflict (SESSION_ALREADY_EXISTS).
func (s *Sandbox) CreateSession(ctx context.Context, opts ...SessionOption) (*Session, error) {
	var req api.CreateSessionRequest
	for _, o := range opts {
		o.applySession(&req)
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var out api.Session
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/sessions"), &req, &out); err != nil {
		return nil, err
	}
	return &Session{sb: s, id: out.ID}, nil
}

// GetSession returns the session's description (ErrNotFound if none).
func (s *Sandbox) GetSession(ctx context.Context, id string) (*api.Session, error) {
	return s.Session(id).Info(ctx)
}

// ListSessions returns the sandbox's sessions, ordered by ID.
func (s *Sandbox) ListSessions(ctx context.Context) ([]api.Session, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var out api.SessionList
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/sessions"), nil, &out); err != nil {
		return nil, err
	}
	return out.Sessions, nil
}

// DeleteSession kills the session's shell, what runs in it and its
// background processes, and forgets it. The default session cannot be
// deleted (an error matching ErrConflict, SESSION_PROTECTED).
func (s *Sandbox) DeleteSession(ctx context.Context, id string) error {
	return s.Session(id).Delete(ctx)
}

// SetEnvVars sets sandbox-level environment variables: the default
// session takes them before its next command, and every session created
// afterwards starts with them. Sessions override them.
func (s *Sandbox) SetEnvVars(ctx context.Context, env map[string]string) error {
	return s.setEnv(ctx, "/env", toLayer(env, nil))
}

// UnsetEnvVars unsets sandbox-level environment variables (also those the
// image sets) in the same places as SetEnvVars.
func (s *Sandbox) UnsetEnvVars(ctx context.Context, names ...string) error {
	return s.setEnv(ctx, "/env", toLayer(nil, names))
}

// EnvVars returns the names of the sandbox-level variables set and unset.
func (s *Sandbox) EnvVars(ctx context.Context) (*api.EnvInfo, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var out api.EnvInfo
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/env"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func toLayer(set map[string]string, unset []string) map[string]*string {
	l := make(map[string]*string, len(set)+len(unset))
	for k, v := range set {
		l[k] = &v
	}
	for _, k := range unset {
		l[k] = nil
	}
	return l
}

func (s *Sandbox) setEnv(ctx context.Context, path string, l map[string]*string) error {
	if len(l) > api.MaxEnvVars {
		return invalidf(api.CodeValidationFailed, "%d environment variables; at most %d are allowed", len(l), api.MaxEnvVars)
	}
	if err := s.prepare(ctx); err != nil {
		return err
	}
	return s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, path), &api.SetEnvRequest{Env: l}, nil)
}

// ID is the session's ID.
func (se *Session) ID() string { return se.id }

func (se *Session) path(suffix string) string { return "/sessions/" + url.PathEscape(se.id) + suffix }

// Info returns the session's description.
func (se *Session) Info(ctx context.Context) (*api.Session, error) {
	if err := se.sb.prepare(ctx); err != nil {
		return nil, err
	}
	var out api.Session
	if err := se.sb.c.doJSON(ctx, http.MethodGet, sandboxPath(se.sb.id, se.path("")), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Delete deletes the session; see Sandbox.DeleteSession.
func (se *Session) Delete(ctx context.Context) error {
	if err := se.sb.prepare(ctx); err != nil {
		return err
	}
	return se.sb.c.doJSON(ctx, http.MethodDelete, sandboxPath(se.sb.id, se.path("")), nil, nil)
}

// SetEnvVars sets session-level variables: the shell takes them before
// its next command; processes started in the session get them.
func (se *Session) SetEnvVars(ctx context.Context, env map[string]string) error {
	return se.sb.setEnv(ctx, se.path("/env"), toLayer(env, nil))
}

// UnsetEnvVars unsets variables in the session, sandbox-level ones
// included.
func (se *Session) UnsetEnvVars(ctx context.Context, names ...string) error {
	return se.sb.setEnv(ctx, se.path("/env"), toLayer(nil, names))
}

// Exec runs command in the session; see Sandbox.Exec.
func (se *Session) Exec(ctx context.Context, command string, opts ...ExecOption) (*ExecResult, error) {
	return se.sb.Exec(ctx, command, append(opts, InSession(se.id))...)
}

// ExecStream runs command in the session; see Sandbox.ExecStream.
func (se *Session) ExecStream(ctx context.Context, command string, opts ...ExecOption) (*ExecStream, error) {
	return se.sb.ExecStream(ctx, command, append(opts, InSession(se.id))...)
}

// StartProcess starts a background process in the session; see
// Sandbox.StartProcess.
func (se *Session) StartProcess(ctx context.Context, command string, opts ...ProcessOption) (*Process, error) {
	return se.sb.StartProcess(ctx, command, append(opts, InSession(se.id))...)
}
