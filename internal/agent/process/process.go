// Package process owns the agent's background processes: it starts them
// through the spawn wrapper (so they run in the user cgroup, as the right
// user) with the reaper as their only waiter, follows their status
// (starting → running → completed | failed | killed | error), keeps their
// output bounded (see logStream), kills their whole tree on request, on
// timeout or with their session, and answers readiness waits.
//
// Each process leads a process group and session of its own (setsid), so
// that a signal reaches what it started even after re-parenting; children
// that leave the group are still found by walking /proc below the leader.
//
// It knows nothing of HTTP. It never waits on a process itself, never logs
// command text, environment values or output, and never blocks a process
// on its output: a pump per stream reads the pipe as fast as it fills.
package process

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/proctree"
	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// Status is where a process is in its life.
type Status string

const (
	Starting  Status = "starting"
	Running   Status = "running"
	Completed Status = "completed"
	Failed    Status = "failed"
	Killed    Status = "killed"
	Error     Status = "error"
)

// Done reports whether s is final.
func (s Status) Done() bool {
	return s == Completed || s == Failed || s == Killed || s == Error
}

// Reasons recorded for killed processes.
const (
	ReasonTimeout        = "timeout"
	ReasonSessionDeleted = "session deleted"
	ReasonAgentRestarted = "agent restarted"
	ReasonShutdown       = "agent shut down"
)

// Errors of the manager; the agent edge maps each to a code.
var (
	ErrNotFound   = errors.New("no such process")
	ErrExists     = errors.New("process ID already in use")
	ErrLimit      = errors.New("too many processes")
	ErrClosed     = errors.New("process manager closed")
	ErrNotRunning = errors.New("process not running")
	// ErrTimeout: a wait or a stdin write ran out of time.
	ErrTimeout = errors.New("timed out")
	// ErrExitedBeforeReady: the process ended before the wait succeeded.
	ErrExitedBeforeReady = errors.New("process exited before it was ready")
)

// Config is the manager's configuration.
type Config struct {
	// Self is the agent binary (the spawn wrapper); default /proc/self/exe.
	Self string
	// CgroupRoot is passed to the spawn wrapper.
	CgroupRoot string
	// Shell runs commands with -c; default /bin/bash, or /bin/sh.
	Shell string
	// LogDir holds the logs (0700, created). It should be on the sandbox's
	// disk: logs outlive an agent restart.
	LogDir string
	// Reaper collects the processes' statuses. Required.
	Reaper *reaper.Reaper
	// Log is the operator log.
	Log *slog.Logger
	// MaxRunning bounds the processes starting or running; MaxRecords the
	// records kept (the oldest finished goes first).
	MaxRunning, MaxRecords int
	// MaxLogBytes bounds each stream's log on disk; TailBytes is the ring
	// kept beyond it.
	MaxLogBytes int64
	TailBytes   int
	// AutoCleanupAfter is how long a finished autoCleanup record stays.
	AutoCleanupAfter time.Duration
	// StartTimeout bounds the wait for the spawn wrapper to exec.
	StartTimeout time.Duration
	// RunDir is the agent's private directory (on a tmpfs); the FIFOs of
	// processes forked by a fork server are made below it. Empty: login
	// processes use the login spare only.
	RunDir string
	// OnChange is called (never under a lock) when records changed, so
	// they can be persisted.
	OnChange func()
}

// Manager is the registry of background processes.
type Manager struct {
	cfg Config
	wg  sync.WaitGroup // pumps, finishers, timers' work

	mu      sync.Mutex
	procs   map[string]*Proc
	order   []*Proc // creation order
	running int
	readers int
	closed  bool

	// The spare wrapper (spare.go) and the login spare (login.go).
	spareMu       sync.Mutex
	spare         *spare
	spareStarting bool
	login         *loginSpare
	loginStarting chan struct{} // closed when the login spare's fork is over
	spareClosed   bool
	// The fork server (forkserver.go).
	fork         *forkServer
	forkStarting chan struct{} // closed when its start is over
	forkVeto     *forkVeto

	forkDir string       // RunDir/login: its commands' FIFOs
	reports atomic.Int64 // statuses reported by login processes (reportScript)

	// The log directory and forkDir are made by the first process start
	// (or fork server start) or by PrepareDirs, whichever comes first; a
	// failure (a full disk) is tried again by the next.
	dirsMu   sync.Mutex
	dirsMade bool
}

// NewManager prepares a manager. Its directories (the log directory,
// the login processes' FIFOs and report script) are made when the first
// process needs them, or at PrepareDirs, not here: about 20 system calls,
// which on gVisor are trips through its Sentry on the way of a cold
// start's first answer, which needs none of them
// (bench/results/gvisor.txt, fifteenth session).
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Reaper == nil {
		return nil, errors.New("process: Config.Reaper is required")
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
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = 64
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = 256
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = 16 << 20
	}
	if cfg.TailBytes <= 0 {
		cfg.TailBytes = 64 << 10
	}
	if cfg.AutoCleanupAfter <= 0 {
		cfg.AutoCleanupAfter = 5 * time.Minute
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func() {}
	}
	m := &Manager{cfg: cfg, procs: make(map[string]*Proc)}
	if cfg.RunDir != "" {
		m.forkDir = filepath.Join(cfg.RunDir, "login")
	}
	return m, nil
}

// PrepareDirs makes the manager's directories now, if no process start
// has: the agent calls it once its first call is answered.
func (m *Manager) PrepareDirs() error {
	m.dirsMu.Lock()
	defer m.dirsMu.Unlock()
	if m.dirsMade {
		return nil
	}
	if err := m.makeDirs(); err != nil {
		return err
	}
	m.dirsMade = true
	return nil
}

func (m *Manager) makeDirs() error {
	if err := os.MkdirAll(m.cfg.LogDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", m.cfg.LogDir, err)
	}
	if err := os.Chmod(m.cfg.LogDir, 0o700); err != nil {
		return fmt.Errorf("securing %s: %w", m.cfg.LogDir, err)
	}
	if m.forkDir == "" {
		return nil
	}
	// Root's, listable by root only: the FIFOs in it are the users'.
	// Emptied: FIFOs an earlier agent left belong to no process now.
	dir := m.forkDir
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("securing %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, reportName), []byte(reportScript(dir)), 0o644); err != nil {
		return fmt.Errorf("writing the login processes' report script: %w", err)
	}
	return nil
}

// StartOptions describe a process to start.
type StartOptions struct {
	// ID is the process's ID; empty: generated. The caller validated it.
	ID      string
	Command string
	// Env is the whole environment.
	Env       []string
	Cwd       string
	SessionID string
	// Account runs the process as that user; nil: root.
	Account     *user.Account
	Timeout     time.Duration
	AutoCleanup bool
	// Login runs Command as a login shell does (bash -l -c): the login
	// profile runs first, in the same shell. See loginSpare.
	Login bool
	// CloseStdin closes the process's stdin as it starts: a process a
	// fork server forks opens /dev/null instead (as E2B's envd gives a
	// process started without stdin), so that it waits for nothing of the
	// agent; any other has its pipe's write end closed before Start
	// returns.
	CloseStdin bool
}

// Info is a process's record.
type Info struct {
	ID          string     `json:"id"`
	PID         int        `json:"pid"`
	Command     string     `json:"command"`
	Status      Status     `json:"status"`
	SessionID   string     `json:"sessionId"`
	User        string     `json:"user,omitempty"`
	StartTime   time.Time  `json:"startTime"`
	EndTime     *time.Time `json:"endTime,omitempty"`
	ExitCode    *int       `json:"exitCode,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	AutoCleanup bool       `json:"autoCleanup,omitempty"`
	Truncated   bool       `json:"truncated,omitempty"`
}

// Proc is one background process.
type Proc struct {
	m    *Manager
	id   string
	logs [2]*logStream

	mu      sync.Mutex
	info    Info
	proc    *os.Process // signals to the leader go through its pidfd
	pipes   [2]*os.File // read ends, for drain requests
	stdin   *os.File    // write end; nil when closed
	stdinMu sync.Mutex  // serialises writers
	timer   *time.Timer

	// login is set for a login process: what the next login shell is
	// started with when it ends.
	login *StartOptions
	// forked is set for a process a fork server forked.
	forked *forkedProc

	started chan struct{} // closed when the start sequence is over
	done    chan struct{} // closed when the final status is recorded
	// ended makes finish run once: a process the fork server forked can
	// report its status before the reaper has it (see reportScript).
	ended sync.Once
}

// ID is the process's ID.
func (p *Proc) ID() string { return p.id }

// Info returns the process's record.
func (p *Proc) Info() Info {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := p.info
	info.Truncated = p.logs[Stdout].isTruncated() || p.logs[Stderr].isTruncated()
	return info
}

// Done is closed once the process has ended and its status is recorded.
func (p *Proc) Done() <-chan struct{} { return p.done }

// NewID returns a fresh generated ID.
func NewID() string {
	var b [4]byte
	rand.Read(b[:])
	return "proc-" + hex.EncodeToString(b[:])
}

// Start starts a process and returns once it runs (or failed to start).
// A process that could not be started is recorded with status error and
// returned without an error: its record says why.
func (m *Manager) Start(ctx context.Context, o StartOptions) (*Proc, error) {
	if err := m.PrepareDirs(); err != nil {
		return nil, err
	}
	if o.ID == "" {
		o.ID = NewID()
	}
	p := &Proc{m: m, id: o.ID, started: make(chan struct{}), done: make(chan struct{})}
	p.info = Info{ID: o.ID, Command: o.Command, Status: Starting, SessionID: o.SessionID,
		StartTime: time.Now().UTC(), AutoCleanup: o.AutoCleanup}
	if o.Account != nil {
		p.info.User = o.Account.Name
	}
	if o.Login {
		p.login = &StartOptions{Env: o.Env, Cwd: o.Cwd, Account: o.Account, Login: true}
	}
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return nil, ErrClosed
	case m.procs[o.ID] != nil:
		m.mu.Unlock()
		return nil, ErrExists
	case m.running >= m.cfg.MaxRunning:
		m.mu.Unlock()
		return nil, ErrLimit
	}
	var evicted []*Proc
	for len(m.procs) >= m.cfg.MaxRecords {
		old := m.oldestDoneLocked()
		if old == nil {
			m.mu.Unlock()
			return nil, ErrLimit
		}
		m.removeLocked(old)
		evicted = append(evicted, old)
	}
	base := filepath.Join(m.cfg.LogDir, o.ID)
	for i, ext := range []string{".stdout", ".stderr"} {
		ls, err := newLogStream(base+ext, m.cfg.MaxLogBytes, m.cfg.TailBytes)
		if err != nil {
			if i == 1 {
				p.logs[0].end()
			}
			m.mu.Unlock()
			return nil, err
		}
		p.logs[i] = ls
	}
	m.procs[o.ID] = p
	m.order = append(m.order, p)
	m.running++
	m.mu.Unlock()
	for _, old := range evicted {
		old.removeFiles()
	}
	p.start(o)
	if o.CloseStdin {
		p.closeStdinAtStart(ctx)
	}
	m.startSpare()
	m.cfg.OnChange()
	return p, nil
}

func (m *Manager) oldestDoneLocked() *Proc {
	for _, p := range m.order {
		select {
		case <-p.done:
			return p
		default:
		}
	}
	return nil
}

// removeLocked forgets p; its files are removed by the caller, outside the
// lock. Called with m.mu held, for a finished process.
func (m *Manager) removeLocked(p *Proc) {
	delete(m.procs, p.id)
	for i, q := range m.order {
		if q == p {
			m.order = append(m.order[:i], m.order[i+1:]...)
			break
		}
	}
}

func (p *Proc) removeFiles() {
	p.mu.Lock()
	pipes := p.pipes
	p.mu.Unlock()
	// A child left behind may keep a pipe open: stop reading it.
	for _, f := range pipes {
		if f != nil {
			f.Close()
		}
	}
	for _, ext := range []string{".stdout", ".stderr", ".stdout.tail", ".stderr.tail"} {
		os.Remove(filepath.Join(p.m.cfg.LogDir, p.id+ext))
	}
}

// start starts the process in the spare wrapper, or forks it through the
// spawn wrapper when there is no spare. It always closes p.started, and
// records status error if the program never ran.
func (p *Proc) start(o StartOptions) {
	defer close(p.started)
	if o.Login {
		if fs := p.m.claimForkServer(o); fs != nil && p.startFromForkServer(o, fs) == nil {
			return
		}
		if sp := p.m.claimLogin(p, o); sp != nil {
			p.startFromLogin(o, sp)
			return
		}
	}
	if sp := p.m.claimSpare(p); sp != nil {
		p.startFromSpare(o, sp)
		return
	}
	p.fork(o)
}

// fork starts the process through a spawn wrapper forked for it.
func (p *Proc) fork(o StartOptions) {
	m := p.m
	fail := p.failStart
	var files [4][2]*os.File // stdin, stdout, stderr, errfd: [read, write]
	for i := range files {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range files[:i] {
				f[0].Close()
				f[1].Close()
			}
			fail("creating pipes: " + err.Error())
			return
		}
		files[i] = [2]*os.File{r, w}
	}
	so := spawn.Options{CgroupRoot: m.cfg.CgroupRoot, ErrFD: 3, CloseErrFD: true}
	if o.Account != nil {
		so.UID, so.GID = &o.Account.UID, &o.Account.GID
	}
	argv := spawn.Argv(m.cfg.Self, so, m.cfg.Shell, loginArgs(o)...)
	attr := &os.ProcAttr{
		Dir:   o.Cwd,
		Env:   o.Env,
		Files: []*os.File{files[0][0], files[1][1], files[2][1], files[3][1]},
		// A group and session of its own: the tree can be signalled as one,
		// and a terminal signal in it never reaches the agent.
		Sys: &syscall.SysProcAttr{Setsid: true},
	}
	var proc *os.Process
	pid, err := m.cfg.Reaper.Start(func() (int, error) {
		var err error
		proc, err = os.StartProcess(argv[0], argv, attr)
		if err != nil {
			return 0, err
		}
		return proc.Pid, nil
	}, func(st reaper.Status) {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); p.finish(st) }()
	})
	// The child has its copies; the agent keeps stdin's write end and the
	// read ends.
	files[0][0].Close()
	files[1][1].Close()
	files[2][1].Close()
	files[3][1].Close()
	if err != nil {
		for _, f := range files {
			f[0].Close()
		}
		files[0][1].Close()
		fail(startError(err))
		return
	}
	p.run(o, proc, pid, files[0][1], [2]*os.File{files[1][0], files[2][0]}, files[3][0])
}

// failStart records that the process never ran, and why; it is over.
func (p *Proc) failStart(why string) {
	p.m.cfg.Log.Info("process could not be started", "process", p.id, "why", why)
	p.mu.Lock()
	p.info.Status, p.info.Reason = Error, why
	now := time.Now().UTC()
	p.info.EndTime = &now
	p.mu.Unlock()
	for _, ls := range p.logs {
		ls.end()
	}
	p.m.mu.Lock()
	p.m.running--
	p.m.mu.Unlock()
	close(p.done)
	p.scheduleCleanup()
}

// run follows a started wrapper: it records the process and its pipes,
// starts the pumps, and waits for the exec (or the wrapper's error). A
// nil errR: there is no wrapper (the process runs); a nil stream: there
// is no output to pump.
func (p *Proc) run(o StartOptions, proc *os.Process, pid int, stdin *os.File, out [2]*os.File, errR *os.File) {
	m := p.m
	p.mu.Lock()
	p.proc = proc
	p.info.PID = pid
	p.pipes = out
	p.stdin = stdin
	p.mu.Unlock()
	for i := range p.logs {
		if out[i] == nil {
			p.logs[i].end()
			continue
		}
		m.wg.Add(1)
		go func() { defer m.wg.Done(); p.logs[i].pump(out[i]) }()
	}
	// The wrapper writes why it failed to the error pipe; a successful
	// exec closes it (close-on-exec) without a word.
	var msg []byte
	if errR != nil {
		errR.SetReadDeadline(time.Now().Add(m.cfg.StartTimeout))
		msg, _ = io.ReadAll(io.LimitReader(errR, 4096))
		errR.Close()
	}
	p.mu.Lock()
	if len(msg) > 0 && p.info.Status != Error {
		p.info.Reason = strings.TrimSpace(string(msg))
		p.info.Status = Error // final once the wrapper is reaped
	} else if p.info.Status == Starting {
		p.info.Status = Running
	}
	if o.Timeout > 0 && p.info.Status == Running {
		p.timer = time.AfterFunc(o.Timeout, func() {
			m.wg.Add(1)
			defer m.wg.Done()
			p.Kill(context.Background(), unix.SIGKILL, 0, ReasonTimeout)
		})
	}
	p.mu.Unlock()
}

func startError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "chdir" {
		return spawn.WorkDirError
	}
	return "starting the process: " + err.Error()
}

// finish records how the process ended, once everything it wrote before
// is in its logs; only the first call counts.
func (p *Proc) finish(st reaper.Status) {
	p.ended.Do(func() { p.record(st) })
}

func (p *Proc) record(st reaper.Status) {
	<-p.started
	p.mu.Lock()
	pipes, fp := p.pipes, p.forked
	p.mu.Unlock()
	if fp != nil {
		p.release(fp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	var wg sync.WaitGroup
	for i, ls := range p.logs {
		if pipes[i] != nil {
			wg.Add(1)
			go func() { defer wg.Done(); ls.requestDrain(ctx, pipes[i]) }()
		}
	}
	wg.Wait()
	cancel()
	now := time.Now().UTC()
	p.mu.Lock()
	p.info.EndTime = &now
	switch {
	case p.info.Status == Error:
		// The wrapper failed; its exit status is its own.
	case st.WS.Signaled():
		code := st.ExitCode()
		p.info.Status, p.info.ExitCode = Killed, &code
		if p.info.Reason == "" {
			p.info.Reason = "signal " + unix.SignalName(st.WS.Signal())
		}
	default:
		code := st.ExitCode()
		p.info.ExitCode = &code
		p.info.Status = Completed
		if code != 0 {
			p.info.Status = Failed
		}
		p.info.Reason = "" // a kill that did not kill it
	}
	if p.timer != nil {
		p.timer.Stop()
	}
	if p.stdin != nil {
		p.stdin.Close()
		p.stdin = nil
	}
	if p.proc != nil {
		p.proc.Release()
	}
	p.mu.Unlock()
	p.m.mu.Lock()
	p.m.running--
	p.m.mu.Unlock()
	if p.login != nil {
		// Before anyone hears of the end, so that a next login process
		// sent right after it finds the spare starting and waits for it.
		p.m.loginEnded(*p.login)
	}
	close(p.done)
	if fp != nil {
		fp.remove()
	}
	p.scheduleCleanup()
	p.m.cfg.OnChange()
}

func (p *Proc) scheduleCleanup() {
	if !p.info.AutoCleanup {
		return
	}
	time.AfterFunc(p.m.cfg.AutoCleanupAfter, func() { p.m.Remove(p.id) })
}

// Get returns the process id.
func (m *Manager) Get(id string) (*Proc, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.procs[id]
	if !ok {
		return nil, ErrNotFound
	}
	return p, nil
}

// List returns the processes in creation order.
func (m *Manager) List() []*Proc {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*Proc(nil), m.order...)
}

// Running is the number of processes starting or running.
func (m *Manager) Running() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.running
}

// Remove kills the process if it runs and forgets it with its logs.
func (m *Manager) Remove(id string) error {
	p, err := m.Get(id)
	if err != nil {
		return err
	}
	p.Kill(context.Background(), unix.SIGKILL, 0, "removed")
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	// The files go first: whoever sees the record gone finds no files.
	p.removeFiles()
	m.mu.Lock()
	if m.procs[id] != p {
		m.mu.Unlock()
		return nil
	}
	m.removeLocked(p)
	m.mu.Unlock()
	m.cfg.OnChange()
	return nil
}

// signalTree sends sig to the process's group, to the leader through its
// pidfd, to every descendant that left the group, and to what the
// process's session left to the agent. It reports whether anything was
// still there.
//
// Why the group is stopped first: a shell leader whose child dies before
// the shell's own signal lands would report the child's death as its exit
// status (137) instead of dying of the signal, and its children would be
// re-parented before they are found. A stopped group cannot react: every
// member gets the signal, and non-fatal-when-stopped signals are delivered
// when the group continues, before any of it runs user code again.
func (p *Proc) signalTree(sig unix.Signal) bool {
	p.mu.Lock()
	pid, proc, fp := p.info.PID, p.proc, p.forked
	p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
	}
	if pid <= 0 {
		return false
	}
	if fp != nil {
		fp.handOver()
	}
	// The group, named by the leader's PID, cannot be reused while the
	// leader is unreaped (it is: done is not closed).
	unix.Kill(-pid, unix.SIGSTOP)
	// With what the process's session left to the agent: a child whose
	// parent ended, out of the tree and, in a group of its own, out of the
	// group (see proctree).
	n, _ := proctree.SignalCommand(pid, 0, sig)
	unix.Kill(-pid, sig)
	if proc != nil {
		proc.Signal(sig)
	}
	if sig != unix.SIGKILL && sig != unix.SIGSTOP {
		proctree.Signal(pid, 0, unix.SIGCONT)
		unix.Kill(-pid, unix.SIGCONT)
	}
	return n > 0 || proc != nil
}

// Kill sends sig to the process's tree and records why. For SIGTERM it
// waits up to grace (0: the default 5s) for the process to end, then
// SIGKILLs the tree; for SIGKILL and SIGTERM it returns once the process
// has ended (or after a bounded wait); other signals return at once. It
// reports whether the process was running.
func (p *Proc) Kill(ctx context.Context, sig unix.Signal, grace time.Duration, reason string) bool {
	<-p.started
	p.mu.Lock()
	running := !p.info.Status.Done()
	if running && reason != "" && (p.info.Reason == "" || sig == unix.SIGKILL) {
		p.info.Reason = reason
	}
	p.mu.Unlock()
	if !running {
		return false
	}
	p.signalTree(sig)
	switch sig {
	case unix.SIGTERM:
		if grace <= 0 {
			grace = 5 * time.Second
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
			return true
		case <-t.C:
		case <-ctx.Done():
		}
	case unix.SIGKILL:
	default:
		return true
	}
	// SIGKILL the tree until it is gone: it may fork while it dies.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		p.signalTree(unix.SIGKILL)
		select {
		case <-p.done:
			return true
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.m.cfg.Log.Error("process did not end after SIGKILL", "process", p.id)
	return true
}

// KillAll kills every running process (see Kill) at once and reports how
// many were running.
func (m *Manager) KillAll(ctx context.Context, sig unix.Signal, grace time.Duration, reason string) int {
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for _, p := range m.List() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p.Kill(ctx, sig, grace, reason) {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return n
}

// KillSession SIGKILLs the running processes of a session.
func (m *Manager) KillSession(sessionID string) int {
	var wg sync.WaitGroup
	n := 0
	for _, p := range m.List() {
		if p.Info().SessionID != sessionID {
			continue
		}
		n++
		wg.Add(1)
		go func() { defer wg.Done(); p.Kill(context.Background(), unix.SIGKILL, 0, ReasonSessionDeleted) }()
	}
	wg.Wait()
	return n
}

// LogReader reads the stored log of one stream from its start; a stream
// still being written is read up to its end at each call. Read returns
// io.EOF at the end of what is stored now; Close it.
func (p *Proc) LogReader(st Stream) (*LogReader, error) {
	ls := p.logs[st]
	total, _, _ := ls.state()
	return &LogReader{r: ls.reader(), end: total}, nil
}

// LogReader is a reader of a stored log.
type LogReader struct {
	r   *logReader
	end int64
}

func (r *LogReader) Read(buf []byte) (int, error) {
	if r.r.off >= r.end {
		return 0, io.EOF
	}
	n, err := r.r.read(buf[:min(int64(len(buf)), r.end-r.r.off)])
	if n == 0 && err == nil {
		return 0, io.EOF
	}
	return n, err
}

// Close releases the reader.
func (r *LogReader) Close() error { r.r.close(); return nil }

// closeStdinAtStart closes the stdin of a process started with
// CloseStdin, unless it has none (a fork server's process reads
// /dev/null).
func (p *Proc) closeStdinAtStart(ctx context.Context) {
	p.mu.Lock()
	fp := p.forked
	p.mu.Unlock()
	if fp != nil && fp.devNull {
		return
	}
	// A process that already ended has no stdin to close.
	_, _ = p.WriteStdin(ctx, nil, true)
}

// WriteStdin writes data to the process's stdin, waiting at most until
// ctx is done for the process to take it, then closes stdin if asked. It
// returns how much was written.
func (p *Proc) WriteStdin(ctx context.Context, data []byte, closeAfter bool) (int, error) {
	<-p.started
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	p.mu.Lock()
	fp := p.forked
	p.mu.Unlock()
	if fp != nil {
		if closed, err := p.waitStdin(ctx, fp, len(data) == 0 && closeAfter); closed || err != nil {
			return 0, err
		}
	}
	p.mu.Lock()
	f := p.stdin
	p.mu.Unlock()
	if f == nil {
		return 0, ErrNotRunning
	}
	written := 0
	if len(data) > 0 {
		if dl, ok := ctx.Deadline(); ok {
			f.SetWriteDeadline(dl)
		}
		stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
		n, err := f.Write(data)
		stop()
		f.SetWriteDeadline(time.Time{})
		written = n
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return written, ErrTimeout
			}
			if errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) {
				return written, ErrNotRunning
			}
			return written, fmt.Errorf("writing stdin: %w", err)
		}
	}
	if closeAfter {
		p.mu.Lock()
		if p.stdin == f {
			p.stdin = nil
		}
		p.mu.Unlock()
		f.Close()
	}
	return written, nil
}

// Close kills every running process (their records say why), waits
// (boundedly) for the bookkeeping to end, and refuses new processes.
func (m *Manager) Close() { m.CloseWithReason(ReasonShutdown) }

// CloseWithReason is Close with the reason the killed processes' records
// give (e.g. "slept" when the sandbox is put to sleep).
func (m *Manager) CloseWithReason(reason string) {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.closeSpare()
	m.KillAll(context.Background(), unix.SIGKILL, 0, reason)
	for _, p := range m.List() {
		p.mu.Lock()
		for _, f := range p.pipes {
			if f != nil {
				f.Close()
			}
		}
		p.mu.Unlock()
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		m.cfg.Log.Error("process bookkeeping did not end in time")
	}
}

// Records returns every record, for persisting.
func (m *Manager) Records() []Info {
	var out []Info
	for _, p := range m.List() {
		out = append(out, p.Info())
	}
	return out
}

// Restore adds the records of an earlier agent. Their processes are gone:
// those that had not ended are recorded as killed with reason.
func (m *Manager) Restore(records []Info, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, info := range records {
		if info.ID == "" || m.procs[info.ID] != nil || strings.ContainsAny(info.ID, "/\x00") {
			continue
		}
		if !info.Status.Done() {
			now := time.Now().UTC()
			info.Status, info.Reason, info.EndTime, info.ExitCode = Killed, reason, &now, nil
		}
		p := &Proc{m: m, id: info.ID, info: info, started: make(chan struct{}), done: make(chan struct{})}
		close(p.started)
		close(p.done)
		base := filepath.Join(m.cfg.LogDir, info.ID)
		p.logs[Stdout] = restoredLogStream(base+".stdout", info.Truncated)
		p.logs[Stderr] = restoredLogStream(base+".stderr", info.Truncated)
		m.procs[info.ID] = p
		m.order = append(m.order, p)
		if info.AutoCleanup {
			time.AfterFunc(m.cfg.AutoCleanupAfter, func() { m.Remove(info.ID) })
		}
	}
}

func signalNum(name string) int { return int(unix.SignalNum(name)) }
