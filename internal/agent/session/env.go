package session

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// Environment layers. A shell's environment is, from lowest to highest:
// Config.BaseEnv (the image's), the user's identity (HOME, USER, LOGNAME)
// for a session with a user, the sandbox layer, then the session layer.
// A layer maps a name to a value, or to nil: unset at that level (a
// session can drop a sandbox-level secret). Per-command variables come on
// top, for the command only.
//
// The default session's sandbox layer is the manager's, live: setting
// sandbox variables changes it. Every other session copies the sandbox
// layer when it is created, so its environment never changes behind its
// back; only its own SetEnv does.
//
// Changes reach a running shell before its next command: the command's
// wrapper exports and unsets what changed since the shell's environment was
// last brought up to date. They never wait for a running command.

// Layer is one level of environment variables; a nil value unsets.
type Layer map[string]*string

// apply merges changes into l (nil values stay, as unsets).
func (l Layer) apply(changes Layer) {
	for k, v := range changes {
		if v != nil {
			v = new(*v)
		}
		l[k] = v
	}
}

func (l Layer) clone() Layer {
	out := make(Layer, len(l))
	out.apply(l)
	return out
}

// Names returns the names set and unset in l, sorted.
func (l Layer) Names() (set, unset []string) {
	for k, v := range l {
		if v == nil {
			unset = append(unset, k)
		} else {
			set = append(set, k)
		}
	}
	sort.Strings(set)
	sort.Strings(unset)
	return set, unset
}

// LayerOf turns a plain map into a layer.
func LayerOf(env map[string]string) Layer {
	l := make(Layer, len(env))
	for k, v := range env {
		l[k] = new(v)
	}
	return l
}

// Definition is what a session is made of, as persisted: enough to make it
// again after an agent restart.
type Definition struct {
	ID             string        `json:"id"`
	Cwd            string        `json:"cwd,omitempty"`
	CommandTimeout time.Duration `json:"commandTimeout,omitempty"`
	User           string        `json:"user,omitempty"`
	// Env is the session layer.
	Env Layer `json:"env,omitempty"`
	// SandboxEnv is the sandbox layer as it was when the session was
	// created (nil for the default session, which follows the live one).
	SandboxEnv Layer     `json:"sandboxEnv,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
}

// envState is a session's environment layers and their version. Guarded
// by Manager.envMu.
type envState struct {
	sandbox Layer // nil for the default session: the manager's live layer
	session Layer
	version uint64
}

// Definition returns the session's definition.
func (s *Session) Definition() Definition {
	s.m.envMu.Lock()
	defer s.m.envMu.Unlock()
	d := Definition{
		ID: s.id, Cwd: s.opts.Cwd, CommandTimeout: s.opts.CommandTimeout, User: s.opts.User,
		Env: s.env.session.clone(), CreatedAt: s.created,
	}
	if s.env.sandbox != nil {
		d.SandboxEnv = s.env.sandbox.clone()
	}
	return d
}

// Cwd is the session's configured working directory (its option, or the
// workspace), not the shell's current one.
func (s *Session) Cwd() string {
	if s.opts.Cwd != "" {
		return s.opts.Cwd
	}
	return s.m.cfg.Workspace
}

// User is the session's user name; empty for root.
func (s *Session) User() string { return s.opts.User }

// SetEnv merges changes into the session layer. Running shells take them
// before their next command.
func (s *Session) SetEnv(changes Layer) {
	s.m.envMu.Lock()
	s.env.session.apply(changes)
	s.env.version++
	s.m.envMu.Unlock()
}

// Environ is the session's environment as a process it starts should get
// it, with extra on top, and the user account the session runs as (nil for
// root). It does not include what commands exported in the shell.
func (s *Session) Environ(acct *user.Account, extra map[string]string) []string {
	s.m.envMu.Lock()
	env := s.environLocked(acct)
	s.m.envMu.Unlock()
	maps.Copy(env, extra)
	return envList(env)
}

// environLocked merges the layers. Called with envMu held.
func (s *Session) environLocked(acct *user.Account) map[string]string {
	env := make(map[string]string, len(s.m.cfg.BaseEnv)+8)
	for _, kv := range s.m.cfg.BaseEnv {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if acct != nil {
		env["HOME"], env["USER"], env["LOGNAME"] = acct.Home, acct.Name, acct.Name
	}
	sandbox := s.env.sandbox
	if sandbox == nil {
		sandbox = s.m.sandboxEnv
	}
	for _, l := range []Layer{sandbox, s.env.session} {
		for k, v := range l {
			if v == nil {
				delete(env, k)
			} else {
				env[k] = *v
			}
		}
	}
	return env
}

// envVersion is the version a shell compares with: the session's changes
// plus, for the default session, the sandbox layer's.
func (s *Session) envVersionLocked() uint64 {
	if s.env.sandbox == nil {
		return s.env.version + s.m.sandboxVersion
	}
	return s.env.version
}

// envChange is one variable to export (value) or unset (nil) in a shell.
type envChange struct {
	name  string
	value *string
}

// pendingEnv returns what must change in sh's environment to match the
// session's, and the version that brings it to. Called with the turn held.
func (s *Session) pendingEnv(sh *shell) ([]envChange, map[string]string, uint64) {
	s.m.envMu.Lock()
	v := s.envVersionLocked()
	if v == sh.envVersion {
		s.m.envMu.Unlock()
		return nil, nil, v
	}
	want := s.environLocked(sh.acct)
	s.m.envMu.Unlock()
	var changes []envChange
	for k, val := range want {
		if old, ok := sh.env[k]; !ok || old != val {
			changes = append(changes, envChange{k, new(val)})
		}
	}
	for k := range sh.env {
		if _, ok := want[k]; !ok {
			changes = append(changes, envChange{k, nil})
		}
	}
	slices.SortFunc(changes, func(a, b envChange) int { return strings.Compare(a.name, b.name) })
	return changes, want, v
}

// SetSandboxEnv merges changes into the sandbox layer: the default session
// takes them before its next command, and sessions created afterwards
// start with them.
func (m *Manager) SetSandboxEnv(changes Layer) {
	m.envMu.Lock()
	m.sandboxEnv.apply(changes)
	m.sandboxVersion++
	m.envMu.Unlock()
}

// SandboxEnv returns a copy of the sandbox layer.
func (m *Manager) SandboxEnv() Layer {
	m.envMu.Lock()
	defer m.envMu.Unlock()
	return m.sandboxEnv.clone()
}

func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
