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
// where there is no bash) started through the spawn wrapper, with its
// stdin a pipe from the agent and its stdout a FIFO back to it (the status
// FIFO). Its first line moves the pipe to a descriptor of its own, makes
// stdin /dev/null and runs a loop, given once in its environment, that
// reads one fixed-size frame per command from the pipe (bash: one `read -N`,
// one system call) and evaluates a readonly text for it:
//
//	{ for..for.. . DIR/cmd 2>DIR/e; done; done >DIR/o; __sbx_s=$?; printf '%s %s\n' "$__sbx_s" >DIR/s 7; } </dev/null
//
// For every command the agent writes the command text to its file and
// writes the frame. Sourcing runs the command in the shell itself, so its
// state persists and `exit` exits the shell. The status line (on the
// status FIFO, which is not open while the command runs) says the command
// finished, with its exit code. Completion never waits for EOF on the
// output FIFOs, because a background child (`sleep 100 &`) may hold them
// open for ever: once the status line is in, whatever the FIFOs hold is
// passed on and the command is complete. After the answer the FIFOs are
// checked for such children (see settle): one a child keeps is let go
// of, and the next command gets a fresh one, so that late output of an
// earlier command's background children stays out of a later command's.
package session

import (
	"errors"
	"fmt"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/user"
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
	// DirectSpawn starts shells without the spawn wrapper, for a sandbox
	// in which it has nothing to do (gVisor: see agent.Config.GVisor).
	DirectSpawn bool
	// BaseEnv is the environment of every shell, before session options.
	BaseEnv []string
	// DefaultUser is the user the default session runs as (the image's
	// USER); empty means root.
	DefaultUser string
	// Reaper collects the shells' exit statuses. Required.
	Reaper *reaper.Reaper
	// Users finds and creates the accounts sessions run as. Nil: sessions
	// with a user are refused.
	Users *user.DB
	// Log gets operator messages; never command text, env values or output.
	Log *slog.Logger

	// MaxSessions bounds the number of sessions; default 64.
	MaxSessions int
	// MaxQueue bounds the commands waiting on one session; default 64.
	MaxQueue int
	// KillGrace is how much processor time, after a timeout, the shell may
	// use to report the killed command's status before the shell itself is
	// killed (at the latest maxGraceFactor x KillGrace of wall time; see
	// runner.graceSpent); default 500ms.
	KillGrace time.Duration
	// StartTimeout bounds the start of a shell; default 10s.
	StartTimeout time.Duration
	// MaxLingering bounds the output FIFOs kept open and drained after
	// their command finished because a background child still writes to
	// them; default 128. Beyond it the oldest is closed (its writers get
	// EPIPE).
	MaxLingering int
}

// etc is the directory of the accounts' files: the Users database's, or
// /etc ("") without one.
func (c *Config) etc() string {
	if c.Users == nil {
		return ""
	}
	return c.Users.Etc
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
	// User is the user the shell runs as, created on demand (see package
	// user); empty means root.
	User string
}

// ErrUser: the session's user is invalid or could not be created.
var ErrUser = errors.New("session user")

// Manager is the registry of sessions.
type Manager struct {
	cfg     Config
	devNull *os.File
	linger  *drainer

	mu       sync.Mutex
	sessions map[string]*Session
	closed   bool

	// envMu guards the sandbox layer and every session's envState.
	envMu          sync.Mutex
	sandboxEnv     Layer
	sandboxVersion uint64
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
		cfg.Shell = spawn.DefaultShell()
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
	// nobody but the agent (and the shells it starts) may look inside. It
	// is searchable (not readable) by all, because the shell of a session
	// with a user must reach its own session directory, which is that
	// user's and 0700; the others are root's and 0700.
	if err := os.MkdirAll(cfg.RunDir, 0o711); err != nil {
		return nil, fmt.Errorf("creating %s: %w", cfg.RunDir, err)
	}
	if err := os.Chmod(cfg.RunDir, 0o711); err != nil {
		return nil, fmt.Errorf("securing %s: %w", cfg.RunDir, err)
	}
	// Opened with open(2) and given to os.NewFile: os.OpenFile tries the
	// runtime's poller on it and puts it back, five system calls more
	// (trips through gVisor's Sentry, on the way of a cold start).
	fd, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: os.DevNull, Err: err}
	}
	devNull := os.NewFile(uintptr(fd), os.DevNull)
	m := &Manager{
		cfg:        cfg,
		devNull:    devNull,
		linger:     newDrainer(cfg.MaxLingering),
		sessions:   make(map[string]*Session),
		sandboxEnv: Layer{},
	}
	_, err = m.Create(Default, Options{User: cfg.DefaultUser})
	if errors.Is(err, ErrUser) {
		// The image names a user that cannot be made: run as root rather
		// than not at all, and say so.
		cfg.Log.Warn("the default session runs as root: the image's user cannot be used", "err", err)
		_, err = m.Create(Default, Options{})
	}
	if err != nil {
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

// Create registers a session; its shell starts on first use. A session
// with a user gets that user now (created if needed).
func (m *Manager) Create(id string, o Options) (*Session, error) {
	return m.create(Definition{
		ID: id, Cwd: o.Cwd, CommandTimeout: o.CommandTimeout, User: o.User,
		Env: LayerOf(o.Env), CreatedAt: time.Now().UTC(),
	}, false)
}

// Restore makes the sessions of an earlier agent again, and its sandbox
// layer, before any shell starts. The default session takes its
// definition's session layer and creation time; a definition that fails
// (its user cannot be made any more, say) is skipped and reported.
func (m *Manager) Restore(sandboxEnv Layer, defs []Definition) error {
	m.envMu.Lock()
	m.sandboxEnv = sandboxEnv.clone()
	m.sandboxVersion++
	m.envMu.Unlock()
	var errs []error
	for _, d := range defs {
		if d.ID == Default {
			def, err := m.Get(Default)
			if err != nil {
				return err
			}
			m.envMu.Lock()
			def.env.session = d.Env.clone()
			def.env.version++
			m.envMu.Unlock()
			if !d.CreatedAt.IsZero() {
				def.created = d.CreatedAt
			}
			continue
		}
		if _, err := m.create(d, true); err != nil {
			errs = append(errs, fmt.Errorf("session %s: %w", d.ID, err))
		}
	}
	return errors.Join(errs...)
}

// Rebase gives every shell a new base environment and drops the sandbox
// layer, the default session's and the copies other sessions took: a
// restored fork of a memory snapshot starts from its own environment,
// without what the parent was given through the API. Session layers stay
// (they are the session's own options). Shells take the change before
// their next command, as for SetEnv.
func (m *Manager) Rebase(base []string) {
	m.mu.Lock() // before envMu, as create takes them
	defer m.mu.Unlock()
	m.envMu.Lock()
	defer m.envMu.Unlock()
	m.cfg.BaseEnv = slices.Clone(base)
	m.sandboxEnv = Layer{}
	m.sandboxVersion++
	for _, s := range m.sessions {
		if s.env.sandbox != nil {
			s.env.sandbox = Layer{}
		}
		s.env.version++
	}
}

// List returns the sessions, ordered by ID.
func (m *Manager) List() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		if !s.isClosed() {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Count is the number of sessions.
func (m *Manager) Count() int { return len(m.List()) }

func (m *Manager) create(d Definition, restoring bool) (*Session, error) {
	id := d.ID
	if !ValidID(id) {
		return nil, fmt.Errorf("invalid session ID %q", id)
	}
	for k := range d.Env {
		if !ValidEnvName(k) {
			return nil, fmt.Errorf("invalid environment variable name %q", k)
		}
	}
	o := Options{Cwd: d.Cwd, CommandTimeout: d.CommandTimeout, User: d.User}
	var acct *user.Account
	if o.User != "" && o.User != "root" {
		if m.cfg.Users == nil {
			return nil, fmt.Errorf("%w %q: %w", ErrUser, o.User, errors.ErrUnsupported)
		}
		a, err := m.cfg.Users.Ensure(o.User)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrUser, o.User, err)
		}
		acct = &a
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
	s, err := newSession(m, id, o, acct)
	if err != nil {
		return nil, err
	}
	s.created = d.CreatedAt
	m.envMu.Lock()
	s.env.session = d.Env.clone()
	if id != Default {
		if restoring && d.SandboxEnv != nil {
			s.env.sandbox = d.SandboxEnv.clone()
		} else if restoring {
			s.env.sandbox = Layer{}
		} else {
			s.env.sandbox = m.sandboxEnv.clone()
		}
	}
	m.envMu.Unlock()
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
