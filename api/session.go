package api

import (
	"net/http"
	"time"
)

// Limits of the sessions and environment API.
const (
	// MaxSessions is the most sessions a sandbox has at once, the default
	// one included.
	MaxSessions = 64
	// MaxUserNameLength bounds a session or process user name.
	MaxUserNameLength = 32
)

// CreateSessionRequest is the body of POST /v1/sandboxes/{id}/sessions.
// Every field is optional.
type CreateSessionRequest struct {
	// ID names the session: 1-64 of [A-Za-z0-9._-], starting with a letter
	// or digit. Default: a generated "session-xxxxxxxx".
	ID string `json:"id,omitempty"`
	// Env is set in the session's shell and in the processes it starts; it
	// overrides the sandbox-level environment.
	Env map[string]string `json:"env,omitempty"`
	// Cwd is the shell's initial working directory. Default /workspace.
	Cwd string `json:"cwd,omitempty"`
	// CommandTimeout (ms) applies to the session's exec calls that set no
	// timeout of their own. 0: none. At most 24h.
	CommandTimeout int64 `json:"commandTimeout,omitempty"`
	// User runs the session's shell, and the processes it starts, as this
	// user of the sandbox, created on demand (with a home directory under
	// /home) if the sandbox's /etc/passwd does not have it. A name of
	// [a-z_][a-z0-9_-]*, at most 32 characters. Default: root.
	User string `json:"user,omitempty"`
}

// Session describes a session. Environment values are never returned,
// only names.
type Session struct {
	ID  string `json:"id"`
	Cwd string `json:"cwd"`
	// CommandTimeout in ms; 0: none.
	CommandTimeout int64  `json:"commandTimeout,omitempty"`
	User           string `json:"user,omitempty"`
	// Env names the variables set at session level (creation and
	// setEnvVars), sorted; Unset names those the session unset.
	Env   []string `json:"env"`
	Unset []string `json:"unset,omitempty"`
	// CreatedAt is when the session was created.
	CreatedAt time.Time `json:"createdAt"`
}

// SessionList is the body of GET /v1/sandboxes/{id}/sessions, ordered by ID.
type SessionList struct {
	Sessions []Session `json:"sessions"`
}

// SetEnvRequest is the body of POST /v1/sandboxes/{id}/env (sandbox level:
// the default session and every session created afterwards) and
// POST /v1/sandboxes/{id}/sessions/{sid}/env (one session). A string value
// sets the variable; null unsets it at that level and every level below
// (so a session can drop a sandbox-level secret). At most 1024 variables.
type SetEnvRequest struct {
	Env map[string]*string `json:"env"`
}

// EnvInfo is the answer of the env routes: the names set and unset at
// that level, sorted. Values are never returned.
type EnvInfo struct {
	Env   []string `json:"env"`
	Unset []string `json:"unset,omitempty"`
}

// CodeSessionProtected: the default session cannot be deleted.
const CodeSessionProtected Code = "SESSION_PROTECTED"

func init() {
	RegisterStatus(CodeSessionProtected, http.StatusConflict)
}
