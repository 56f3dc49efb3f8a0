// Package session owns the agent's sessions: persistent shells in which
// commands run one at a time, keeping cd, variables, functions and aliases
// from one command to the next. It starts and restarts the shells, runs each
// command with its own output pipes, enforces timeouts by killing the
// command's process tree, and tells completion apart from a shell that died.
//
// It knows nothing of HTTP or of the wire format: the agent edge turns
// requests into Commands and Results and errors into responses. It never
// waits on a process itself (the reaper does) and never logs command text,
// environment values, stdin or output.
//
// How a command runs. Each shell is `bash --noprofile --norc` (or /bin/sh
// where there is no bash) started through the spawn wrapper, with stdin a
// pipe from the agent and fd 3 a "status" pipe back to it. For every
// command the agent writes the command text to a file, creates fresh FIFOs
// for stdout and stderr, and writes one line to the shell:
//
//	command . DIR/cmd </dev/null >DIR/o7 2>DIR/e7 3>&-; command printf '7 %s\n' "$?" >&3
//
// Sourcing runs the command in the shell itself, so its state persists and
// `exit` exits the shell. The status line on fd 3 (closed for the command
// itself) says the command finished, with its exit code. Completion never
// waits for EOF on the output FIFOs, because a background child (`sleep 100
// &`) may hold them open for ever: once the status line is in, whatever the
// FIFOs hold is drained and the command is complete. Fresh FIFOs per command
// keep late output of an earlier command's background children out of a
// later command's output.
package session

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
)

// Default is the ID of the session every sandbox has.
const Default = "default"

// Errors of the registry and of Exec. The agent edge maps each to a code.
var (
	ErrNotFound = errors.New("no such session")
	ErrExists   = errors.New("session already exists")
	ErrLimit    = errors.New("too many sessions")
	ErrBusy     = errors.New("too many commands queued on the session")
	ErrClosed   = errors.New("session closed")
)

// Config is what every session of one agent shares.
type Config struct {
	// RunDir is the agent's private directory for FIFOs and scripts, made
	// 0700, with one sub-directory per session (emptied when the session is
	// created). It should be on a tmpfs (/run).
	RunDir string
	// Workspace is the default working directory of sessions.
	Workspace string
	// Shell is the shell to run; empty means /bin/bash, or /bin/sh if there
	// is no bash.
	Shell string
	// Self is the agent binary, re-executed as the spawn wrapper; default
	// /proc/self/exe.
	Self string
	// CgroupRoot is passed to the spawn wrapper (see package spawn).
	CgroupRoot string
	// BaseEnv is the environment of every shell, before session options.
	BaseEnv []string
	// Reaper collects the shells' exit statuses. Required.
	Reaper *reaper.Reaper
	// Log gets operator messages; never command text, env values or output.
	Log *slog.Logger

	// MaxSessions bounds the number of sessions; default 64.
	MaxSessions int
	// MaxQueue bounds the commands waiting on one session; default 64.
	MaxQueue int
	// KillGrace is how long, after a timeout, the shell may take to report
	// the killed command's status before the shell itself is killed;
	// default 500ms.
	KillGrace time.Duration
	// StartTimeout bounds the start of a shell; default 10s.
	StartTimeout time.Duration
	// MaxLingering bounds the output FIFOs kept open and drained after
	// their command finished because a background child still writes to
	// them; default 128. Beyond it the oldest is closed (its writers get
	// EPIPE).
	MaxLingering int
}

// Options are one session's settings, fixed at creation. A shell that dies
// is replaced by one started with the same options.
type Options struct {
	// Env is added to (and overrides) Config.BaseEnv.
	Env map[string]string
	// Cwd is the initial working directory; default Config.Workspace.
	Cwd string
	// CommandTimeout applies to commands that set none; 0 means none.
	CommandTimeout time.Duration
	// User is the user the shell runs as; empty means root. Running as
	// another user is not implemented yet (the spawn wrapper must join the
	// cgroup as root, then drop privileges), so Create refuses it.
	User string
}

// Manager is the registry of sessions.
type Manager struct {
	cfg     Config
	devNull *os.File
	linger  *drainer

	mu       sync.Mutex
	sessions map[string]*Session
	closed   bool
}

// NewManager prepares the run directory and registers the default session
// (its shell starts on first use or on Warm).
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Reaper == nil {
		return nil, errors.New("session: Config.Reaper is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Self == "" {
		cfg.Self = "/proc/self/exe"
	}
	if cfg.Shell == "" {
		cfg.Shell = "/bin/bash"
		if _, err := os.Stat(cfg.Shell); err != nil {
			cfg.Shell = "/bin/sh"
		}
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 64
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 64
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 500 * time.Millisecond
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.MaxLingering <= 0 {
		cfg.MaxLingering = 128
	}
	if !filepath.IsAbs(cfg.RunDir) || !filepath.IsAbs(cfg.Workspace) {
		return nil, errors.New("session: RunDir and Workspace must be absolute")
	}
	// The directory holds command text and per-command environment values:
	// nobody but the agent (and the shells it starts) may look inside.
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.RunDir, err)
	}
	if err := os.Chmod(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("securing %s: %w", cfg.RunDir, err)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:      cfg,
		devNull:  devNull,
		linger:   newDrainer(cfg.MaxLingering),
		sessions: make(map[string]*Session),
	}
	if _, err := m.Create(Default, Options{}); err != nil {
		devNull.Close()
		return nil, err
	}
	return m, nil
}

// ValidID reports whether id can name a session: 1-64 characters of
// [A-Za-z0-9._-], starting with a letter or digit. IDs name directories
// under RunDir, so this is also what keeps them safe there.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 || !isAlnum(id[0]) {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ValidEnvName reports whether name can be an environment variable name
// set in a shell: [A-Za-z_][A-Za-z0-9_]*. Names reach generated shell code,
// so nothing else may pass.
func ValidEnvName(name string) bool {
	if len(name) == 0 || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Get returns the session named id, or ErrNotFound.
func (m *Manager) Get(id string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	s, ok := m.sessions[id]
	if !ok || s.isClosed() {
		return nil, ErrNotFound
	}
	return s, nil
}

// Create registers a session; its shell starts on first use.
func (m *Manager) Create(id string, o Options) (*Session, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("invalid session ID %q", id)
	}
	for k := range o.Env {
		if !ValidEnvName(k) {
			return nil, fmt.Errorf("invalid environment variable name %q", k)
		}
	}
	if o.User != "" {
		return nil, fmt.Errorf("session user %q: %w", o.User, errors.ErrUnsupported)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return nil, ErrClosed
	case m.sessions[id] != nil:
		return nil, ErrExists
	case len(m.sessions) >= m.cfg.MaxSessions:
		return nil, ErrLimit
	}
	s, err := newSession(m, id, o)
	if err != nil {
		return nil, err
	}
	m.sessions[id] = s
	return s, nil
}

// Delete kills the session's shell and everything it started, and forgets
// the session. The ID stays taken (Create fails with ErrExists) until the
// session's directory is gone, so a new session of the same name never
// shares it with the old one.
func (m *Manager) Delete(id string) error {
	m.mu.Lock()
	s, ok := m.sessions[id]
	m.mu.Unlock()
	if !ok || s.isClosed() {
		return ErrNotFound
	}
	s.close()
	m.mu.Lock()
	if m.sessions[id] == s {
		delete(m.sessions, id)
	}
	m.mu.Unlock()
	return nil
}

// Close kills every session's shell and process group, waits (boundedly)
// for running commands to return, and releases everything.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	all := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		all = append(all, s)
	}
	clear(m.sessions)
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Add(1)
		go func() { defer wg.Done(); s.close() }()
	}
	wg.Wait()
	m.linger.close()
	m.devNull.Close()
}

// shellEnv is the environment of a session's shell: the base environment,
// overridden by the session's own variables, sorted for stable output.
func (m *Manager) shellEnv(o Options) []string {
	merged := make(map[string]string, len(m.cfg.BaseEnv)+len(o.Env))
	for _, kv := range m.cfg.BaseEnv {
		if k, v, ok := strings.Cut(kv, "="); ok {
			merged[k] = v
		}
	}
	for k, v := range o.Env {
		merged[k] = v
	}
	env := make([]string, 0, len(merged))
	for k, v := range merged {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	return env
}
