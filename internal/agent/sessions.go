package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/session"
	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// maxSmallBody bounds the JSON bodies of session, environment and process
// control calls.
const maxSmallBody = 1 << 20

// maxEnvBytes bounds the names and values of one environment map.
const maxEnvBytes = 256 << 10

// decodeBody decodes one JSON object of at most limit bytes into v. An
// empty body is allowed when emptyOK (every field optional).
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, emptyOK bool) *api.Error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if emptyOK && errors.Is(err, io.EOF) {
			return nil
		}
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return decodeError(err)
		}
		return api.Errorf(api.CodeInvalidJSON, "the body must be one JSON object")
	}
	return nil
}

// validateEnv checks an environment map's names and values.
func validateEnv(env map[string]string) *api.Error {
	l := make(session.Layer, len(env))
	for k, v := range env {
		l[k] = &v
	}
	return validateLayer(l)
}

func validateLayer(env session.Layer) *api.Error {
	if len(env) > api.MaxEnvVars {
		return api.Errorf(api.CodeValidationFailed, "env has more than %d variables", api.MaxEnvVars)
	}
	size := 0
	for name, value := range env {
		if len(name) > maxEnvName || !session.ValidEnvName(name) {
			return api.Errorf(api.CodeValidationFailed, "env name %q is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*, at most %d characters)", truncate(name, 64), maxEnvName)
		}
		size += len(name)
		if value != nil {
			if strings.IndexByte(*value, 0) >= 0 {
				return api.Errorf(api.CodeValidationFailed, "env value of %s contains a NUL byte", name)
			}
			size += len(*value)
		}
	}
	if size > maxEnvBytes {
		return api.Errorf(api.CodeValidationFailed, "env exceeds %d bytes", maxEnvBytes)
	}
	return nil
}

// validateCwd checks a working directory: absolute, bounded, no NUL.
func validateCwd(cwd string) *api.Error {
	switch {
	case cwd == "":
		return nil
	case len(cwd) > maxCwd:
		return api.Errorf(api.CodeValidationFailed, "cwd exceeds %d bytes", maxCwd)
	case strings.IndexByte(cwd, 0) >= 0:
		return api.Errorf(api.CodeValidationFailed, "cwd contains a NUL byte")
	case !filepath.IsAbs(cwd):
		return api.Errorf(api.CodeValidationFailed, "cwd must be an absolute path")
	}
	return nil
}

// validateUser checks a user name ("" and "root" are root).
func validateUser(name string) *api.Error {
	if name == "" || name == "root" || user.ValidName(name) {
		return nil
	}
	return api.Errorf(api.CodeValidationFailed, "user must be a name of [a-z_][a-z0-9_-]*, at most %d characters", api.MaxUserNameLength)
}

func validateTimeout(field string, ms int64) *api.Error {
	if ms < 0 || ms > api.MaxTimeout.Milliseconds() {
		return api.Errorf(api.CodeValidationFailed, "%s must be between 0 and %d milliseconds", field, api.MaxTimeout.Milliseconds())
	}
	return nil
}

func randomID(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// sessionWire describes a session on the wire.
func sessionWire(s *session.Session) api.Session {
	d := s.Definition()
	set, unset := d.Env.Names()
	if set == nil {
		set = []string{}
	}
	u := d.User
	if u == "root" {
		u = ""
	}
	return api.Session{
		ID: d.ID, Cwd: s.Cwd(), CommandTimeout: d.CommandTimeout.Milliseconds(), User: u,
		Env: set, Unset: unset, CreatedAt: d.CreatedAt,
	}
}

// saveNow persists the state before answering a change the caller must
// find again after an agent restart. A change that creates something
// (a session, a process) is undone when this fails, and the caller told
// why: NO_SPACE when the sandbox's disk is full.
func (s *server) saveNow() *api.Error {
	return s.saveError(s.state.save())
}

func (s *server) saveError(err error) *api.Error {
	if err == nil {
		return nil
	}
	if isDiskFull(err) {
		return noSpace()
	}
	s.log.Error("saving agent state", "err", err)
	return api.Errorf(api.CodeInternal, "internal error in the sandbox agent: its state could not be saved")
}

// saveOrLog persists a change that is already in effect in the running
// agent and cannot be taken back (environment, deleting a session): a
// failure is logged, and the change holds until the agent restarts.
func (s *server) saveOrLog() {
	if e := s.saveNow(); e != nil {
		s.log.Warn("agent state not saved; the change holds until the agent restarts", "code", e.Code)
	}
}

func (s *server) createSession(w http.ResponseWriter, r *http.Request) {
	var req api.CreateSessionRequest
	if e := decodeBody(w, r, maxSmallBody, &req, true); e != nil {
		writeError(w, e)
		return
	}
	if req.ID == "" {
		req.ID = randomID("session-")
	}
	if !session.ValidID(req.ID) {
		writeError(w, api.Errorf(api.CodeValidationFailed, "id must be 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit"))
		return
	}
	for _, e := range []*api.Error{validateEnv(req.Env), validateCwd(req.Cwd), validateUser(req.User), validateTimeout("commandTimeout", req.CommandTimeout)} {
		if e != nil {
			writeError(w, e)
			return
		}
	}
	sess, err := s.sessions.Create(req.ID, session.Options{
		Env: req.Env, Cwd: req.Cwd, User: req.User,
		CommandTimeout: time.Duration(req.CommandTimeout) * time.Millisecond,
	})
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	if e := s.saveNow(); e != nil {
		// A session the agent would forget at its next start is not made.
		s.sessions.Delete(sess.ID())
		writeError(w, e)
		return
	}
	writeJSON(w, http.StatusCreated, sessionWire(sess))
}

func (s *server) listSessions(w http.ResponseWriter, r *http.Request) {
	out := api.SessionList{Sessions: []api.Session{}}
	for _, sess := range s.sessions.List() {
		out.Sessions = append(out.Sessions, sessionWire(sess))
	}
	writeJSON(w, http.StatusOK, out)
}

// pathSession returns the session named in the path, or answers the error.
func (s *server) pathSession(w http.ResponseWriter, r *http.Request) (*session.Session, bool) {
	id := r.PathValue("sid")
	if !session.ValidID(id) {
		writeError(w, api.Errorf(api.CodeSessionNotFound, "no such session"))
		return nil, false
	}
	sess, err := s.sessions.Get(id)
	if err != nil {
		writeError(w, s.apiError(err))
		return nil, false
	}
	return sess, true
}

func (s *server) getSession(w http.ResponseWriter, r *http.Request) {
	if sess, ok := s.pathSession(w, r); ok {
		writeJSON(w, http.StatusOK, sessionWire(sess))
	}
}

// deleteSession kills the session's shell and everything running in it,
// its background processes included.
func (s *server) deleteSession(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.pathSession(w, r)
	if !ok {
		return
	}
	if sess.ID() == session.Default {
		writeError(w, api.Errorf(api.CodeSessionProtected, "the default session cannot be deleted"))
		return
	}
	s.processes.KillSession(sess.ID())
	if err := s.sessions.Delete(sess.ID()); err != nil {
		writeError(w, s.apiError(err))
		return
	}
	s.saveOrLog()
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) decodeEnv(w http.ResponseWriter, r *http.Request) (session.Layer, bool) {
	var req api.SetEnvRequest
	if e := decodeBody(w, r, maxSmallBody, &req, false); e != nil {
		writeError(w, e)
		return nil, false
	}
	l := session.Layer(req.Env)
	if e := validateLayer(l); e != nil {
		writeError(w, e)
		return nil, false
	}
	return l, true
}

func envInfo(l session.Layer) api.EnvInfo {
	set, unset := l.Names()
	if set == nil {
		set = []string{}
	}
	return api.EnvInfo{Env: set, Unset: unset}
}

func (s *server) setSessionEnv(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.pathSession(w, r)
	if !ok {
		return
	}
	l, ok := s.decodeEnv(w, r)
	if !ok {
		return
	}
	sess.SetEnv(l)
	s.saveOrLog()
	writeJSON(w, http.StatusOK, envInfo(sess.Definition().Env))
}

func (s *server) getSandboxEnv(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, envInfo(s.sessions.SandboxEnv()))
}

func (s *server) setSandboxEnv(w http.ResponseWriter, r *http.Request) {
	l, ok := s.decodeEnv(w, r)
	if !ok {
		return
	}
	s.sessions.SetSandboxEnv(l)
	s.saveOrLog()
	writeJSON(w, http.StatusOK, envInfo(s.sessions.SandboxEnv()))
}
