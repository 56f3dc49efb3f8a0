package e2b

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"path"
	"strings"

	"github.com/sandboxd/sandboxd/api"
)

// serveEnvd serves envd's routes for sandbox id (path p without the
// prefix). Every route but /health and /files needs the sandbox's envd
// access token; /files takes the token or a signature (files.go).
func (s *Server) serveEnvd(w http.ResponseWriter, r *http.Request, id, p string) {
	e, ok := s.table.get(id)
	if !ok || e.Paused {
		// What E2B's edge answers for a sandbox that is gone: the SDK
		// reads 502 as "not running" (isRunning false, TimeoutError).
		writeControlJSON(w, http.StatusBadGateway, controlErrorf(http.StatusBadGateway, "sandbox %q not found or not running", id))
		return
	}
	r = r.WithContext(withTenant(r.Context(), e.Tenant))
	tokenOK := subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Access-Token")), []byte(s.table.token("envd", id))) == 1
	switch {
	case p == "/health" && r.Method == http.MethodGet:
		w.WriteHeader(http.StatusNoContent)
		return
	case p == "/files":
		s.serveFiles(w, r, id, tokenOK)
		return
	}
	if !tokenOK {
		writeControlJSON(w, http.StatusUnauthorized, controlErrorf(http.StatusUnauthorized, "missing or invalid X-Access-Token"))
		return
	}
	user, err := userOf(r)
	if err != nil {
		if strings.HasPrefix(p, "/process.") || strings.HasPrefix(p, "/filesystem.") {
			writeUnaryError(w, err)
		} else {
			writeControlError(w, controlErrorf(http.StatusBadRequest, "%s", err.Error()))
		}
		return
	}
	c := &call{s: s, id: id, user: user}
	switch {
	case strings.HasPrefix(p, "/process.Process/") && r.Method == http.MethodPost:
		c.serveProcess(w, r, strings.TrimPrefix(p, "/process.Process/"))
	case strings.HasPrefix(p, "/filesystem.Filesystem/") && r.Method == http.MethodPost:
		c.serveFilesystem(w, r, strings.TrimPrefix(p, "/filesystem.Filesystem/"))
	case p == "/envs" && r.Method == http.MethodGet:
		s.serveEnvs(w, r, id)
	case p == "/metrics" && r.Method == http.MethodGet:
		s.serveEnvdMetrics(w, r, id)
	default:
		writeUnaryError(w, rpcErrorf(codeUnimplemented, "%s %s is not served by sandboxd's E2B layer", r.Method, p))
	}
}

// call is one envd call: the sandbox and the user it acts as.
type call struct {
	s    *Server
	id   string
	user string
}

// defaultUser is the user envd runs commands and file operations as when
// the request names none, as on E2B's templates.
const defaultUser = DefaultUser

// DefaultUser is the user E2B's SDK runs commands as: the daemon's warm
// pool makes its sandboxes ready for its login processes.
const DefaultUser = "user"

// userOf reads the user of an envd call from "Authorization: Basic
// base64(<user>:)"; none is defaultUser.
func userOf(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return defaultUser, nil
	}
	enc, ok := strings.CutPrefix(h, "Basic ")
	if !ok {
		return "", rpcErrorf(codeInvalidArgument, "Authorization must be Basic base64(<user>:)")
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "", rpcErrorf(codeInvalidArgument, "Authorization is not valid base64")
	}
	name, _, _ := strings.Cut(string(raw), ":")
	if name == "" {
		return defaultUser, nil
	}
	if !validUser(name) {
		return "", rpcErrorf(codeInvalidArgument, "user %q: a name of [a-z_][a-z0-9_-]*, at most 32 characters", name)
	}
	return name, nil
}

func validUser(name string) bool {
	if name == "" || len(name) > 32 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// home is the user's home directory, where relative paths resolve and
// commands start.
func home(user string) string {
	if user == "root" {
		return "/root"
	}
	return "/home/" + user
}

// resolve makes p absolute against the user's home, as envd does.
func (c *call) resolve(p string) (string, error) {
	if p == "" {
		return "", rpcErrorf(codeInvalidArgument, "path is empty")
	}
	if strings.HasPrefix(p, "~/") || p == "~" {
		p = home(c.user) + strings.TrimPrefix(p, "~")
	}
	if !path.IsAbs(p) {
		p = path.Join(home(c.user), p)
	}
	return path.Clean(p), nil
}

// session is the sandboxd session whose user file operations act as, so
// what they create belongs to that user; "" for root (the default
// session). Made once per sandbox and user.
func (c *call) session(ctx context.Context) (string, error) {
	if c.user == "root" {
		return "", nil
	}
	sid := "e2b-" + c.user
	key := c.id + "/" + c.user
	c.s.usersMu.Lock()
	done := c.s.users[key]
	c.s.usersMu.Unlock()
	if done {
		return sid, nil
	}
	err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "sessions"), api.CreateSessionRequest{ID: sid, User: c.user, Cwd: home(c.user)}, nil)
	var ae *api.Error
	if err != nil && !(errors.As(err, &ae) && ae.Code == api.CodeSessionExists) {
		return "", err
	}
	c.s.usersMu.Lock()
	c.s.users[key] = true
	c.s.usersMu.Unlock()
	return sid, nil
}

// serveEnvs answers envd's GET /envs: the sandbox's variables. sandboxd
// never returns values, so the names map to empty strings.
func (s *Server) serveEnvs(w http.ResponseWriter, r *http.Request, id string) {
	writeControlJSON(w, http.StatusOK, map[string]string{})
}
