package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// Command is one command to run in a session.
type Command struct {
	// Text is the shell command line; never empty, never contains NUL.
	Text string
	// Env is set for this command only (names must pass ValidEnvName).
	Env map[string]string
	// Cwd is the working directory for this command only; empty: the
	// session's current one.
	Cwd string
	// Stdin, when not nil, is the command's standard input; otherwise
	// stdin is /dev/null.
	Stdin []byte
	// Timeout kills the command after this long; 0: the session's
	// CommandTimeout, if any.
	Timeout time.Duration
}

// Result is how a command ended. Exec fills it in also when it returns an
// error, as far as it is known.
type Result struct {
	// ExitCode is the command's exit status (128+n when killed by signal
	// n); for ErrTerminated, the shell's.
	ExitCode int
	// Duration is the time from handing the command to the shell to its
	// end.
	Duration time.Duration
}

// Stream says which output a chunk came from.
type Stream int

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// Output receives a command's output as it is produced. Its methods are
// called from the goroutine that called Exec, one at a time.
type Output interface {
	// Begin is called once, when the command is about to be handed to the
	// shell (after waiting for its turn and starting the shell if needed).
	Begin()
	// Write gets the next chunk of one stream. p is only valid during the
	// call. An error (the client went away) aborts the command like a
	// cancelled context.
	Write(s Stream, p []byte) error
}

// ErrTerminated is returned when the shell exited during the command
// (`exit`, `exec`, a signal). The next command gets a fresh shell.
var ErrTerminated = errors.New("the session's shell exited during the command")

// TimeoutError is returned when a command ran past its timeout and was
// killed with its process tree.
type TimeoutError struct {
	Timeout time.Duration
	// ShellRestarted is set when the shell could not be made to stop the
	// command (not bash, the trap reset, or no answer within the grace;
	// see unwindInit) and was killed too: the session's state (cwd,
	// variables, functions) is lost.
	ShellRestarted bool
}

func (e *TimeoutError) Error() string {
	msg := fmt.Sprintf("command timed out after %s and was killed", e.Timeout)
	if e.ShellRestarted {
		msg += "; the shell itself had to be killed, so the session's state (working directory, variables, functions, aliases) was lost"
	}
	return msg
}

// AbortError is returned when a command was killed because its caller went
// away: the context was cancelled or Output.Write failed.
type AbortError struct{ Cause error }

func (e *AbortError) Error() string { return "command aborted: " + e.Cause.Error() }
func (e *AbortError) Unwrap() error { return e.Cause }

// Session is one persistent shell and the queue of commands for it.
type Session struct {
	m       *Manager
	id      string
	opts    Options
	acct    *user.Account // nil: root
	dir     string        // private directory under RunDir
	created time.Time
	env     envState // guarded by m.envMu

	// turn holds one token; whoever holds it runs the session's command.
	// Blocked receivers are served in arrival order.
	turn      chan struct{}
	queued    atomic.Int32 // tickets not yet finished, including the running one
	closed    chan struct{}
	closeOnce sync.Once

	// Owned by the holder of the turn.
	ep int // epoll instance: status pipe, wake eventfd, output FIFOs
	// epw is ep in the Go runtime's poller, which wait blocks in (see
	// wait).
	epw  syscall.RawConn
	epf  *os.File
	wake *waker
	seq  uint64
	buf  []byte
	// outs are the output FIFOs DIR/o and DIR/e, indexed by Stream, kept
	// from one command to the next (see outFIFO).
	outs [3]outFIFO
	// cmdFile is DIR/cmd, made ahead for the next command.
	cmdFile commandFile
	// null is DIR/n, the stdin of a command whose text is in its frame.
	null stdinLink
	// after is what the last command left for after its answer (settle).
	after afterCommand

	// shMu guards sh for readers that do not hold the turn (close).
	shMu sync.Mutex
	sh   *shell
}

func newSession(m *Manager, id string, o Options, acct *user.Account) (*Session, error) {
	dir := filepath.Join(m.cfg.RunDir, id)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("cleaning session directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating session directory: %w", err)
	}
	if acct != nil {
		// The shell opens its FIFOs and sources its command files here.
		if err := os.Lchown(dir, acct.UID, acct.GID); err != nil {
			os.Remove(dir)
			return nil, fmt.Errorf("giving the session directory to %s: %w", acct.Name, err)
		}
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("creating epoll: %w", err)
	}
	epf, epw, err := pollable(ep)
	if err != nil {
		unix.Close(ep)
		return nil, err
	}
	w, err := newWaker()
	if err != nil {
		epf.Close()
		return nil, err
	}
	if err := epollAdd(ep, w.fd, unix.EPOLLIN); err != nil {
		epf.Close()
		w.close()
		return nil, err
	}
	s := &Session{
		m: m, id: id, opts: o, acct: acct, dir: dir, created: time.Now().UTC(),
		env:     envState{session: Layer{}},
		turn:    make(chan struct{}, 1),
		closed:  make(chan struct{}),
		ep:      ep,
		epf:     epf,
		epw:     epw,
		wake:    w,
		buf:     make([]byte, 64<<10),
		outs:    [3]outFIFO{{-1, -1}, {-1, -1}, {-1, -1}},
		cmdFile: commandFile{fd: -1},
	}
	s.turn <- struct{}{}
	return s, nil
}

// ID is the session's name.
func (s *Session) ID() string { return s.id }

// Account is the user the session runs as; nil for root.
func (s *Session) Account() *user.Account { return s.acct }

// CreatedAt is when the session was first created (before any restart).
func (s *Session) CreatedAt() time.Time { return s.created }

// own gives a file the session's shell must open to the session's user.
func (s *Session) own(path string) error {
	if s.acct == nil {
		return nil
	}
	if err := os.Lchown(path, s.acct.UID, s.acct.GID); err != nil {
		return fmt.Errorf("giving %s to the session user: %w", path, err)
	}
	return nil
}

// Ticket is a place in a session's queue, used for one Exec.
type Ticket struct {
	s    *Session
	used atomic.Bool
}

// Enqueue takes a place in the session's queue, or fails at once with
// ErrBusy when MaxQueue commands are already waiting. The ticket must be
// used with Exec or given back with Release.
func (s *Session) Enqueue() (*Ticket, error) {
	select {
	case <-s.closed:
		return nil, ErrClosed
	default:
	}
	if int(s.queued.Add(1)) > s.m.cfg.MaxQueue+1 { // +1: the running one
		s.queued.Add(-1)
		return nil, ErrBusy
	}
	return &Ticket{s: s}, nil
}

// Release gives the place back without running anything. It is a no-op
// after Exec.
func (t *Ticket) Release() {
	if t.used.CompareAndSwap(false, true) {
		t.s.queued.Add(-1)
	}
}

// Exec runs cmd through the queue; see Ticket.Exec.
func (s *Session) Exec(ctx context.Context, cmd Command, out Output) (Result, error) {
	t, err := s.Enqueue()
	if err != nil {
		return Result{}, err
	}
	return t.Exec(ctx, cmd, out)
}

// Exec waits for the ticket's turn, then runs cmd in the session's shell,
// starting a shell first if there is none or the last one died. Output goes
// to out as it is produced. A ticket runs one command.
func (t *Ticket) Exec(ctx context.Context, cmd Command, out Output) (Result, error) {
	s := t.s
	if !t.used.CompareAndSwap(false, true) {
		return Result{}, errors.New("session: ticket used twice")
	}
	defer s.queued.Add(-1)
	select {
	case <-s.turn:
	case <-s.closed:
		return Result{}, ErrClosed
	case <-ctx.Done():
		return Result{}, &AbortError{Cause: context.Cause(ctx)}
	}
	defer s.handBack()
	select {
	case <-s.closed:
		return Result{}, ErrClosed
	default:
	}
	if cmd.Timeout == 0 {
		cmd.Timeout = s.opts.CommandTimeout
	}
	began := false
	for attempt := 0; ; attempt++ {
		if err := s.ensureShell(ctx); err != nil {
			return Result{}, err
		}
		if !began {
			out.Begin()
			began = true
		}
		res, err := s.run(ctx, cmd, out, s.sh)
		if errors.Is(err, errNotDispatched) && attempt == 0 {
			// The shell died between commands and never saw this one:
			// running it in a fresh shell is safe.
			s.m.cfg.Log.Warn("session shell gone before dispatch; restarting it", "session", s.id, "err", err)
			s.dropShell()
			continue
		}
		return res, err
	}
}

// handBack gives the turn back. When the command left work for after its
// answer (see settle), a goroutine does it first, holding the turn, so
// that the caller's answer goes out before it (with one processor, as in
// a gVisor sandbox of one CPU, the goroutine runs once the caller waits
// for its next request); the next command waits for it as for any
// command before it.
func (s *Session) handBack() {
	if !s.after.pending {
		s.turn <- struct{}{}
		return
	}
	go func() {
		s.settle()
		s.turn <- struct{}{}
	}()
}

// Warm starts the session's shell now (if it has none), so that the first
// command does not pay for it.
func (s *Session) Warm(ctx context.Context) error {
	select {
	case <-s.turn:
	case <-s.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { s.turn <- struct{}{} }()
	return s.ensureShell(ctx)
}

// WarmAtBoot is Warm for the agent's start-up, before it serves anything
// and before any user program runs in the sandbox: a root shell whose
// environment names no start-up file (BASH_ENV, ENV) starts without the
// spawn wrapper, and the agent moves it into the user cgroups itself
// (spawn.Adopt) before the shell reads its first line. launched is called
// once the shell is in its cgroups, or as soon as it is known that it
// starts otherwise or not at all; the caller serves requests only after
// it, so no user program can exist while the shell is still outside its
// cgroup (and trace it into forking there).
//
// Why: the wrapper is a Go program of its own, and its start-up on the
// sandbox's one CPU was about half of the time from the agent's first
// instruction to the answer of a sandbox's first command. The shell
// itself runs no code of anyone's before its first line: bash reads
// neither profile nor rc file (--noprofile --norc), and the start-up
// file a non-interactive bash reads (BASH_ENV) sends the start through
// the wrapper.
func (s *Session) WarmAtBoot(ctx context.Context, launched func()) error {
	var once sync.Once
	done := func() { once.Do(launched) }
	defer done()
	select {
	case <-s.turn:
	case <-s.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { s.turn <- struct{}{} }()
	return s.ensureShellWith(ctx, done)
}

// ensureShell makes sure s.sh is a live shell. Called with the turn held.
func (s *Session) ensureShell(ctx context.Context) error {
	return s.ensureShellWith(ctx, nil)
}

// ensureShellWith is ensureShell; a non-nil launched asks for the boot
// start of WarmAtBoot.
func (s *Session) ensureShellWith(ctx context.Context, launched func()) error {
	if s.sh != nil && !s.sh.exited.Load() {
		return nil
	}
	if s.sh != nil {
		s.dropShell()
		// Fresh output FIFOs with the fresh shell: if user code replaced
		// one at its path, the shell opens the replacement, and a new
		// shell is the way out.
		for _, st := range []Stream{Stdout, Stderr} {
			s.outs[st].letGo(s, st, false)
		}
	}
	sh, err := s.startShell(ctx, launched)
	if err != nil {
		return fmt.Errorf("starting the shell of session %s: %w", s.id, err)
	}
	// close takes shMu after marking the session closed and kills the
	// shell it finds; a shell that was still starting then is not there
	// yet, so it is killed here instead of outliving the session.
	s.shMu.Lock()
	defer s.shMu.Unlock()
	if s.isClosed() {
		sh.killGroup()
		sh.release(s.ep)
		return ErrClosed
	}
	s.sh = sh
	return nil
}

// dropShell kills the current shell (if it still runs) and releases it.
// Called with the turn held.
func (s *Session) dropShell() {
	s.shMu.Lock()
	sh := s.sh
	s.sh = nil
	s.shMu.Unlock()
	if sh != nil {
		sh.release(s.ep)
	}
}

func (s *Session) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// close kills the shell and its process group, waits (boundedly) for a
// running command to notice, and releases the session's resources.
func (s *Session) close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.shMu.Lock()
		if s.sh != nil {
			s.sh.killGroup()
		}
		s.shMu.Unlock()
		select {
		case <-s.turn:
		case <-time.After(5 * time.Second):
			s.m.cfg.Log.Error("session command did not end after its shell was killed; leaking its resources", "session", s.id)
			return
		}
		s.dropShell()
		for st := range s.outs {
			s.outs[st].close(s.ep)
		}
		s.cmdFile.close()
		s.epf.Close()
		s.wake.close()
		os.RemoveAll(s.dir)
	})
}

// waker is an eventfd in the session's epoll set, written to interrupt a
// command's wait: by the reaper when the shell exits, or when the caller's
// context is cancelled. Writes after close are dropped, never sent to a
// reused descriptor number.
type waker struct {
	mu sync.Mutex
	fd int
	// pending: a wake-up was written and not yet consumed, so reset reads
	// only then (every command resets: a read of an empty eventfd would be
	// one more system call on its way).
	pending bool
}

func newWaker() (*waker, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	return &waker{fd: fd}, nil
}

func (w *waker) wake() {
	one := [8]byte{1}
	w.mu.Lock()
	if w.fd >= 0 {
		unix.Write(w.fd, one[:])
		w.pending = true
	}
	w.mu.Unlock()
}

// reset consumes pending wake-ups. Only the turn holder calls it.
func (w *waker) reset() {
	var b [8]byte
	w.mu.Lock()
	if w.fd >= 0 && w.pending {
		rawRead(w.fd, b[:])
		w.pending = false
	}
	w.mu.Unlock()
}

func (w *waker) close() {
	w.mu.Lock()
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
	w.mu.Unlock()
}

// pollable puts the epoll instance ep into the Go runtime's poller (an
// epoll instance is itself readable when it has events), for wait.
func pollable(ep int) (*os.File, syscall.RawConn, error) {
	if err := unix.SetNonblock(ep, true); err != nil {
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	f := os.NewFile(uintptr(ep), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("epoll: %w", err)
	}
	return f, rc, nil
}

// wait returns the session's epoll events, waiting for them until
// deadline (zero: no deadline; n is 0 when it passed). It waits in the Go
// runtime's poller rather than in a blocking epoll_wait: a goroutine
// blocked in a system call keeps its thread and processor busy, which
// keeps the runtime's monitor thread polling every 20 us and hands work
// between threads, each a system call, and on gVisor a trip through the
// Sentry, on every command's way.
func (s *Session) wait(events []unix.EpollEvent, deadline time.Time) (n int, err error) {
	if err := s.epf.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	var werr error
	err = s.epw.Read(func(fd uintptr) bool {
		n, werr = rawEpollPoll(int(fd), events)
		return n > 0 || (werr != nil && werr != unix.EINTR)
	})
	if !deadline.IsZero() {
		s.epf.SetReadDeadline(time.Time{})
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, nil
	case err != nil:
		return 0, err
	}
	return max(n, 0), werr
}

// briefWait is how long after handing a command to the shell the agent
// waits for it in system calls that keep its thread and the Go runtime's
// processor (see waitBriefly).
const briefWait = 5 * time.Millisecond

// waitBriefly waits for the session's events in a raw epoll_pwait on its
// own epoll instance, until deadline (which is at most briefWait after
// the command began); later waits are in the runtime's poller (wait).
// Parking the goroutine there and waking it costs the agent four system
// calls more on every command's way: a poll before the wait, net/http's
// background read of the caller's connection, and the scheduler's
// non-blocking and blocking netpoll, each a trip through gVisor's Sentry
// on the sandbox's CPU, which the shell needs at that moment. Short
// commands (builtins, quick scripts) end within it; the rest of the agent
// (other calls, streams, the reaper) waits at most briefWait for the
// processor. n is 0 when the time passed or a signal came.
func (s *Session) waitBriefly(events []unix.EpollEvent, deadline time.Time) (n int, err error) {
	left := time.Until(deadline)
	if left <= 0 {
		return 0, nil
	}
	n, err = rawEpollWait(s.ep, events, int((left+time.Millisecond-1)/time.Millisecond))
	if err == unix.EINTR {
		return 0, nil
	}
	return max(n, 0), err
}

func epollAdd(ep, fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}
