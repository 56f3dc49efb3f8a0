// Package pty owns the agent's interactive terminals: a shell on a
// pseudo-terminal, started through the spawn wrapper (so it runs in the
// user cgroup), whose output is fanned out to any number of attached
// clients and kept in a bounded replay buffer for clients that attach
// later. A terminal lives on for an idle time after its last client
// leaves, then is hung up; it ends, with the shell's exit code, when the
// shell exits.
//
// It knows nothing of HTTP or WebSockets (the agent edge carries a
// Client's bytes and control messages) and it never waits on a process:
// the reaper reports the shell's exit. It never logs terminal input or
// output.
//
// Why the master is re-opened non-blocking: creack/pty's ioctls call
// os.File.Fd, which puts the descriptor in blocking mode for good, and a
// blocked read of a terminal can then neither time out nor be interrupted
// by Close. The master is therefore duplicated into a non-blocking
// descriptor that the runtime's poller manages, and window sizes are set
// through SyscallConn rather than creack/pty's helpers.
//
// Fan-out never blocks the shell: one goroutine reads the master and
// appends each chunk to the replay buffer and to every client's queue. A
// client whose queue holds more than Config.ClientQueueBytes is cut off
// (ErrOverflow) rather than allowed to hold the others back; it can
// attach again and gets the replay.
package pty

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	creack "github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

// Errors of Attach and Close; the agent edge maps each to a code.
var (
	ErrLimit    = errors.New("too many terminals")
	ErrClients  = errors.New("too many clients on the terminal")
	ErrConflict = errors.New("the terminal belongs to another session")
	ErrNotFound = errors.New("no such terminal")
	ErrClosed   = errors.New("terminals are shut down")
	// ErrOverflow: the client fell too far behind the terminal's output.
	ErrOverflow = errors.New("the client fell too far behind the terminal's output")
)

// ExitError is what Client.Next returns once the shell has exited and the
// client has had all of its output.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return "the shell exited with status " + strconv.Itoa(e.Code) }

// Clock schedules the idle timers; tests replace it.
type Clock interface {
	AfterFunc(d time.Duration, f func()) (stop func() bool)
}

type realClock struct{}

func (realClock) AfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Config is what every terminal of one agent shares.
type Config struct {
	// Reaper collects the shells' exit statuses. Required.
	Reaper *reaper.Reaper
	// Self is the agent binary, re-executed as the spawn wrapper; default
	// /proc/self/exe.
	Self string
	// CgroupRoot is passed to the spawn wrapper.
	CgroupRoot string
	Log        *slog.Logger
	// MaxTerminals bounds the terminals of the agent; default 32.
	MaxTerminals int
	// MaxClients bounds the clients of one terminal; default 16.
	MaxClients int
	// ReplayBytes is how much recent output a terminal keeps; default
	// 256 KiB.
	ReplayBytes int
	// ClientQueueBytes is how much output may wait for one client; default
	// 4 MiB.
	ClientQueueBytes int
	// DrainGrace is how long, after the shell exited, output is still read
	// from processes it left holding the terminal; default 200ms.
	DrainGrace time.Duration
	// HangupGrace is how long a hung-up shell may take to exit before its
	// process group is killed; default 2s.
	HangupGrace time.Duration
	Clock       Clock
}

// Options start one terminal.
type Options struct {
	// ID names the terminal; Session is the session whose environment it
	// started with (informational, and checked on attach).
	ID, Session string
	// Shell is the program, an absolute path; Args its arguments.
	Shell string
	Args  []string
	Env   []string
	Dir   string
	// Cols and Rows are the initial size.
	Cols, Rows int
	// IdleTimeout is how long the terminal lives without clients.
	IdleTimeout time.Duration
	// UID and GID, when UID is not nil, are who the shell runs as (the
	// spawn wrapper drops to them after joining the user cgroup); the
	// terminal device is given to that user, as login does.
	UID, GID *int
}

// Manager holds the agent's terminals.
type Manager struct {
	cfg Config

	mu     sync.Mutex
	terms  map[string]*Terminal
	closed bool
}

// NewManager returns a Manager.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Reaper == nil {
		return nil, errors.New("pty: Config.Reaper is required")
	}
	if cfg.Self == "" {
		cfg.Self = "/proc/self/exe"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxTerminals <= 0 {
		cfg.MaxTerminals = 32
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 16
	}
	if cfg.ReplayBytes <= 0 {
		cfg.ReplayBytes = 256 << 10
	}
	if cfg.ClientQueueBytes <= 0 {
		cfg.ClientQueueBytes = 4 << 20
	}
	if cfg.DrainGrace <= 0 {
		cfg.DrainGrace = 200 * time.Millisecond
	}
	if cfg.HangupGrace <= 0 {
		cfg.HangupGrace = 2 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	return &Manager{cfg: cfg, terms: map[string]*Terminal{}}, nil
}

// Attach attaches a client to the terminal o.ID, starting it first if it
// does not run; created says whether it was started. prepare, when not
// nil, is called before a start to complete o (the environment and
// directory of a session, say); an attach to a running terminal does not
// call it. A terminal of another session is ErrConflict.
func (m *Manager) Attach(o Options, prepare func(*Options) error) (c *Client, created bool, err error) {
	if c, ok, err := m.attachRunning(o); ok {
		return c, false, err
	}
	// Preparing may take a moment (a snapshot of a session's state): it
	// runs without the lock, and if another client started the terminal
	// meanwhile, this one attaches to that.
	if prepare != nil {
		if err := prepare(&o); err != nil {
			return nil, false, err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, false, ErrClosed
	}
	if t := m.terms[o.ID]; t != nil && !t.ended() {
		c, err := t.attachChecked(o)
		return c, false, err
	}
	if len(m.terms) >= m.cfg.MaxTerminals {
		return nil, false, fmt.Errorf("%w: at most %d", ErrLimit, m.cfg.MaxTerminals)
	}
	t, err := m.start(o)
	if err != nil {
		return nil, false, err
	}
	m.terms[o.ID] = t
	c, err = t.attach()
	return c, true, err
}

// attachRunning attaches to the terminal o.ID if it runs; ok says whether
// it did (or failed for a reason other than the terminal's absence).
func (m *Manager) attachRunning(o Options) (*Client, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, true, ErrClosed
	}
	t := m.terms[o.ID]
	if t == nil || t.ended() {
		return nil, false, nil
	}
	c, err := t.attachChecked(o)
	return c, true, err
}

// Info describes a terminal.
type Info struct {
	ID, Session, Shell string
	PID                int
	Cols, Rows         int
	Clients            int
	CreatedAt          time.Time
}

// List returns the running terminals, by ID.
func (m *Manager) List() []Info {
	m.mu.Lock()
	terms := make([]*Terminal, 0, len(m.terms))
	for _, t := range m.terms {
		terms = append(terms, t)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(terms))
	for _, t := range terms {
		out = append(out, t.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Close hangs up the terminal id; its clients get the shell's exit.
func (m *Manager) Close(id string) error {
	m.mu.Lock()
	t := m.terms[id]
	m.mu.Unlock()
	if t == nil {
		return ErrNotFound
	}
	t.hangup("closed by request")
	return nil
}

// Shutdown hangs up every terminal and waits (at most HangupGrace and a
// little) for them to end. No terminal starts afterwards.
func (m *Manager) Shutdown() {
	m.mu.Lock()
	m.closed = true
	terms := make([]*Terminal, 0, len(m.terms))
	for _, t := range m.terms {
		terms = append(terms, t)
	}
	m.mu.Unlock()
	for _, t := range terms {
		t.hangup("the agent is shutting down")
	}
	deadline := time.After(m.cfg.HangupGrace + time.Second)
	for _, t := range terms {
		select {
		case <-t.done:
		case <-deadline:
			return
		}
	}
}

func (m *Manager) forget(t *Terminal) {
	m.mu.Lock()
	if m.terms[t.id] == t {
		delete(m.terms, t.id)
	}
	m.mu.Unlock()
}

// start opens a pseudo-terminal and starts the shell on it.
func (m *Manager) start(o Options) (_ *Terminal, err error) {
	ptmx, tty, err := creack.Open()
	if err != nil {
		return nil, fmt.Errorf("opening a pseudo-terminal: %w", err)
	}
	defer tty.Close()
	master, err := nonblocking(ptmx)
	ptmx.Close()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			master.Close()
		}
	}()
	if err := setSize(master, o.Cols, o.Rows); err != nil {
		return nil, err
	}
	t := &Terminal{
		m: m, id: o.ID, session: o.Session, shell: o.Shell, master: master,
		cols: o.Cols, rows: o.Rows, idle: o.IdleTimeout, createdAt: time.Now().UTC(),
		clients: map[*Client]bool{}, exited: make(chan int, 1), readDone: make(chan struct{}),
		done: make(chan struct{}),
	}
	so := spawn.Options{CgroupRoot: m.cfg.CgroupRoot, Argv0: filepath.Base(o.Shell)}
	if o.UID != nil {
		so.UID, so.GID = o.UID, o.GID
		// Programs reopen their terminal by name (/dev/tty: less, ssh,
		// sudo): the user must own it.
		if err := tty.Chown(*o.UID, -1); err != nil {
			return nil, fmt.Errorf("giving the terminal to uid %d: %w", *o.UID, err)
		}
	}
	argv := spawn.Argv(m.cfg.Self, so, o.Shell, o.Args...)
	attr := &os.ProcAttr{
		Dir:   o.Dir,
		Env:   o.Env,
		Files: []*os.File{tty, tty, tty},
		// A session of its own with the terminal as its controlling
		// terminal: job control, Ctrl-C and SIGWINCH work as on a console,
		// and nothing the shell does can signal the agent.
		Sys: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0},
	}
	_, err = m.cfg.Reaper.Start(func() (int, error) {
		p, err := os.StartProcess(argv[0], argv, attr)
		if err != nil {
			return 0, err
		}
		t.proc, t.pid = p, p.Pid
		return p.Pid, nil
	}, func(st reaper.Status) {
		t.exited <- st.ExitCode()
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", o.Shell, err)
	}
	go t.read()
	go t.run()
	return t, nil
}

// nonblocking returns a copy of f, in non-blocking mode and managed by the
// runtime's poller (see the package comment).
func nonblocking(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(raw uintptr) {
		fd, dupErr = unix.FcntlInt(raw, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("duplicating the terminal: %w", dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "ptmx"), nil
}

// setSize sets the terminal's window size; the kernel tells the
// foreground process group with SIGWINCH.
func setSize(master *os.File, cols, rows int) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)})
	}); err != nil {
		return err
	}
	if ioErr != nil {
		return fmt.Errorf("setting the terminal size: %w", ioErr)
	}
	return nil
}
