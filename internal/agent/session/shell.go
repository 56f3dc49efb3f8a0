package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// maxStatusLine bounds a status line; a longer one means the protocol is
// broken and the shell is killed.
const maxStatusLine = 256

// shell is one running shell process of a session.
type shell struct {
	pid int
	// pidfd: signals go through it, never to a reused PID (-1 where the
	// kernel gives none: then by PID, while the shell is unreaped). pidMu
	// keeps a signal from using it while release closes it.
	pidMu sync.Mutex
	pidfd int
	bash  bool

	in int // write end of the shell's frame pipe (its frameFD), non-blocking
	// inPeek is the agent's copy of the read end of the frame pipe. It is
	// never read: it tells whether a dead shell had read the last frame
	// (see unread), and it keeps writes from failing with EPIPE.
	inPeek int
	// status is the status FIFO (see statusFIFO), open for reading and
	// writing, non-blocking: the shell's stdout between commands.
	status int
	line   []byte
	eof    bool // the status FIFO reported end of file (only if it failed)

	// acct is who the shell runs as (nil: root); env is its environment
	// as the agent last set it, at version envVersion (see pendingEnv).
	acct       *user.Account
	env        map[string]string
	envVersion uint64

	// Set by the reaper.
	exited atomic.Bool
	code   atomic.Int32
}

// startShell starts a shell through the spawn wrapper and waits until it
// answers on the status pipe. A non-nil launched asks for WarmAtBoot's
// start, and is called once the shell runs in its cgroups.
func (s *Session) startShell(ctx context.Context, launched func()) (_ *shell, err error) {
	cfg := &s.m.cfg
	cwd := s.opts.Cwd
	if cwd == "" {
		cwd = cfg.Workspace
	}
	// User code may have removed the directory; a session must still be
	// able to start a shell, or one `rm -rf` would break it for good.
	if _, err := os.Stat(cwd); err != nil {
		if cwd == cfg.Workspace {
			os.MkdirAll(cwd, 0o755)
		} else {
			s.m.cfg.Log.Warn("session working directory is gone; starting the shell in /", "session", s.id)
			cwd = "/"
		}
	}
	acct := s.acct
	if acct != nil && cfg.Users != nil {
		// Again at every start: user code may have edited /etc/passwd.
		a, err := cfg.Users.Ensure(acct.Name)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrUser, acct.Name, err)
		}
		acct = &a
	}
	// The status FIFO: the agent's end open for reading and writing, so
	// that the shell's opening it (at every command's end) never blocks
	// and its closing it (at every command's start) is no end of file.
	statusPath := s.dir + "/" + statusFIFO
	if err := mkfifo(statusPath); err != nil {
		return nil, fmt.Errorf("creating the status FIFO: %w", err)
	}
	if err := s.own(statusPath); err != nil {
		return nil, err
	}
	status, err := unix.Open(statusPath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the status FIFO: %w", err)
	}
	var in [2]int
	if err := unix.Pipe2(in[:], unix.O_CLOEXEC); err != nil {
		unix.Close(status)
		return nil, fmt.Errorf("creating the frame pipe: %w", err)
	}
	sh := &shell{status: status, in: in[1], inPeek: in[0], pidfd: -1, bash: filepath.Base(cfg.Shell) == "bash"}
	sh.acct = acct
	s.m.envMu.Lock()
	sh.env = s.environLocked(acct)
	sh.envVersion = s.envVersionLocked()
	s.m.envMu.Unlock()
	defer func() {
		if err != nil {
			sh.killGroup()
			unix.Close(sh.status)
			unix.Close(sh.in)
			unix.Close(sh.inPeek)
			if sh.pidfd >= 0 {
				unix.Close(sh.pidfd)
			}
		}
	}()
	w, err := unix.Open(statusPath, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the status FIFO: %w", err)
	}
	statusW := os.NewFile(uintptr(w), "status")
	defer statusW.Close()
	frames, err := dupFile(in[0], "frames")
	if err != nil {
		return nil, err
	}
	defer frames.Close()

	argv0 := filepath.Base(cfg.Shell)
	init := dispatchLoop(s.dir, sh.bash)
	if sh.bash {
		init = "shopt -s expand_aliases; " + unwindInit(s.dir) + init
	}
	init = "command unset " + initVar + "; " + init
	env := envList(sh.env)
	if _, set := sh.env["SHELL"]; sh.bash && !set {
		// bash's own value, without its passwd lookup; exported only
		// by a starter, so the shell stops exporting it (see
		// user.LoginShell).
		uid := 0
		if acct != nil {
			uid = acct.UID
		}
		env = append(env, "SHELL="+user.LoginShell(cfg.etc(), uid))
		init = "command export -n SHELL; " + init
	}
	var args []string
	if sh.bash {
		args = []string{"--noprofile", "--norc"}
	}
	// Errors of the spawn wrapper go to the status FIFO, where the agent
	// waits for "ready".
	so := spawn.Options{CgroupRoot: cfg.CgroupRoot, ErrFD: 1, Argv0: argv0}
	if acct != nil {
		so.UID, so.GID = &acct.UID, &acct.GID
	}
	argv := spawn.Argv(cfg.Self, so, cfg.Shell, args...)
	prog := argv[0]
	attr := &os.ProcAttr{
		Dir: cwd,
		Env: withInit(env, init),
		// stdin the start-up line (initInput); stdout the status FIFO;
		// stderr nowhere: what the shell says outside a command (a trace
		// of the agent's lines under `set -x`) belongs to nobody, and the
		// loop closes it (commands get their own FIFOs); 3 the frame
		// pipe, which the line moves to frameFD.
		Files: []*os.File{nil, statusW, s.m.devNull, frames},
		// A session of its own: `kill 0` or a terminal signal in user code
		// reaches the shell's process group, never the agent.
		Sys: &syscall.SysProcAttr{Setsid: true},
	}
	// adopt: the boot shell of WarmAtBoot, started directly and moved
	// into the user cgroups by the agent before it reads its first line.
	adopt := launched != nil && !cfg.DirectSpawn && acct == nil && sh.env["BASH_ENV"] == "" && sh.env["ENV"] == ""
	if cfg.DirectSpawn || adopt {
		// Without the wrapper: the shell itself, as the wrapper would
		// have made it (argv[0], user). A failed start is StartProcess's
		// error instead of a message on the status pipe.
		prog, argv = cfg.Shell, append([]string{argv0}, args...)
		if acct != nil {
			attr.Sys.Credential = spawn.Credential(acct.UID, acct.GID)
		}
	}
	stdin, sendInit, err := initInput(sh.bash, adopt)
	if err != nil {
		return nil, err
	}
	defer stdin.Close()
	defer sendInit.Close()
	attr.Files[0] = stdin
	_, err = cfg.Reaper.Start(func() (int, error) {
		pid, pidfd, err := startProcess(prog, argv, attr)
		if err != nil {
			return 0, err
		}
		sh.pid, sh.pidfd = pid, pidfd
		return pid, nil
	}, func(st reaper.Status) {
		sh.code.Store(int32(st.ExitCode()))
		sh.exited.Store(true)
		s.wake.wake()
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", cfg.Shell, err)
	}
	statusW.Close()
	frames.Close()
	stdin.Close()
	if adopt {
		// Fails closed: the deferred clean-up kills the shell.
		if err := spawn.Adopt(cfg.CgroupRoot, sh.pid); err != nil {
			return nil, err
		}
		if _, err := sendInit.Write(initLine(sh.bash)); err != nil {
			return nil, fmt.Errorf("talking to the shell: %w", err)
		}
		sendInit.Close()
	}
	if launched != nil {
		launched()
	}
	if err := unix.SetNonblock(sh.in, true); err != nil {
		return nil, err
	}
	if err := epollAdd(s.ep, sh.status, unix.EPOLLIN); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			unix.EpollCtl(s.ep, unix.EPOLL_CTL_DEL, sh.status, nil)
		}
	}()
	if err := s.awaitReady(ctx, sh); err != nil {
		return nil, err
	}
	return sh, nil
}

// initVar carries the shell's start-up text (the dispatch variables, the
// unwind trap, the ready line, the dispatch loop) in its environment, and
// initLine, the one line of the shell's stdin (see initInput), runs it
// (the text drops the variable first). Sent as a line, the ~2.5 KB text
// would cost a shell reading a pipe as many reads (see initInput), where
// an environment variable costs none.
const initVar = "__sbx_init"

// initLine moves the frame pipe (the shell's descriptor 3) to frameFD,
// makes stdin /dev/null and closes stderr, and runs the start-up text,
// whose loop never returns to the shell's own reading of stdin (`$-` still
// says s, as when each command came as a line). The moves are done here,
// at the top level: bash 5.2 crashes when it moves the descriptor its
// input comes from inside an eval.
func initLine(bash bool) []byte {
	return fmt.Appendf(nil, "command exec %d<&3 3<&- </dev/null 2>&-; command eval \"$%s\"\n", frameFD(bash), initVar)
}

// initInput returns the shell's stdin, from which it reads initLine, and,
// for a shell that must not read the line before the agent has adopted it
// (held), the write end of a pipe to send it on; else a memory file with
// the line at offset 0, and a nil *os.File (whose Close does nothing).
//
// A shell reads a pipe one byte (one system call) at a time, so that it
// never takes input meant for a command it runs: the 63-byte line cost
// bash 63 reads, tens of microseconds each in gVisor, on a cold start's
// way to its first command; a regular file it reads in one call. A held
// shell is the boot shell started beside the user cgroups (WarmAtBoot):
// once its line is readable it runs code, and its environment is the
// user's (an exported function can stand for any word of the line), so
// the line waits in a pipe until the shell is in the cgroups. A gVisor
// sandbox's shells and those started through the spawn wrapper (which
// joins the cgroups before it executes the shell) are never held.
func initInput(bash, held bool) (stdin, send *os.File, err error) {
	if held {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("creating the shell's start-up pipe: %w", err)
		}
		return r, w, nil
	}
	fd, err := unix.MemfdCreate("sandboxd-init", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the shell's start-up line: %w", err)
	}
	f := os.NewFile(uintptr(fd), "init")
	// pwrite: the shell reads from the file's offset, which stays 0.
	if _, err := f.WriteAt(initLine(bash), 0); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("writing the shell's start-up line: %w", err)
	}
	return f, nil, nil
}

// withInit returns env with initVar set to init, replacing any value the
// sandbox's environment gave it (the __sbx_ names are the agent's).
func withInit(env []string, init string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, initVar+"=") {
			out = append(out, kv)
		}
	}
	return append(out, initVar+"="+init)
}

// awaitReady waits for the shell's "ready" line. Anything else on the
// status pipe before EOF is the spawn wrapper's error message.
func (s *Session) awaitReady(ctx context.Context, sh *shell) error {
	deadline := time.Now().Add(s.m.cfg.StartTimeout)
	var msg []byte
	events := make([]unix.EpollEvent, 4)
	failed := func(why string) error {
		text := strings.TrimSpace(string(msg))
		if text == "" {
			text = why
		}
		return fmt.Errorf("the shell did not start: %s", text)
	}
	for {
		var b [512]byte
		n, err := unix.Read(sh.status, b[:])
		switch {
		case n > 0:
			msg = append(msg, b[:n]...)
			if string(msg) == "ready\n" {
				return nil
			}
			if len(msg) > 4096 {
				return failed("")
			}
			continue
		case n == 0 && err == nil:
			return failed("it exited at once")
		case err != unix.EAGAIN && err != unix.EINTR:
			return fmt.Errorf("reading status pipe: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if sh.exited.Load() {
			return failed(fmt.Sprintf("it exited with status %d", sh.code.Load()))
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("the shell did not answer within %s", s.m.cfg.StartTimeout)
		}
		nev, werr := s.wait(events, deadline)
		if werr != nil && werr != unix.EINTR {
			return fmt.Errorf("epoll wait: %w", werr)
		}
		s.wake.reset()
		s.discardOutputs(events[:nev])
	}
}

// discardOutputs reads and drops what reached an output FIFO while no
// command ran (user code may open it by its path): it belongs to no
// command, and left there it would keep the FIFO ready in the epoll set.
func (s *Session) discardOutputs(events []unix.EpollEvent) {
	for _, ev := range events {
		for st := range s.outs {
			if fd := s.outs[st].r; fd >= 0 && int(ev.Fd) == fd {
				// Bounded: a writer that never stops is not waited out.
				for range 16 {
					if n, _ := unix.Read(fd, s.buf); n <= 0 {
						break
					}
				}
			}
		}
	}
}

// dupFile returns a copy of fd as an *os.File, to be handed to a child.
func dupFile(fd int, name string) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating %s: %w", name, err)
	}
	return os.NewFile(uintptr(d), name), nil
}

// unread is the number of bytes written to the shell's stdin that it has
// not read. The shell runs a line only after reading its newline, so a
// shell that died with unread bytes never ran the last command.
func (sh *shell) unread() int {
	n, err := unix.IoctlGetInt(sh.inPeek, unix.TIOCINQ) // = FIONREAD, for pipes too
	if err != nil {
		return 0
	}
	return n
}

// send writes one line to the shell's stdin. The line is far smaller than
// the pipe buffer and the shell reads each line before the agent writes
// the next, so a full pipe means the shell is not reading: gone, or
// wedged.
func (sh *shell) send(line []byte) error {
	for len(line) > 0 {
		n, err := rawWrite(sh.in, line)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		line = line[n:]
	}
	return nil
}

// signal sends sig to the shell itself, through its pidfd, and reports
// whether it was sent (signal 0: whether the shell is alive).
func (sh *shell) signal(sig syscall.Signal) bool {
	if sh.pid <= 0 || sh.exited.Load() {
		return false
	}
	sh.pidMu.Lock()
	defer sh.pidMu.Unlock()
	switch {
	case sh.pidfd >= 0:
		return unix.PidfdSendSignal(sh.pidfd, sig, nil, 0) == nil
	case sh.pidfd == released:
		return false
	}
	return unix.Kill(sh.pid, sig) == nil
}

// released is a shell's pidfd once release closed it.
const released = -2

// vforkable reports whether startVforked does all that sys asks: a
// session of the child's own, and nothing else (no credentials).
func vforkable(sys *syscall.SysProcAttr) bool {
	rest := *sys
	rest.Setsid = false
	return sys.Setsid && reflect.ValueOf(rest).IsZero()
}

// startProcess is os.StartProcess with a pidfd of the child (-1 where the
// kernel cannot make one), without the os package's check, once per
// process, that pidfds work (pidfd_open, waitid, pidfd_send_signal and a
// child cloned with a pidfd and reaped): ten system calls and a task's
// start and end, each costly in gVisor, on the way of a cold start's first
// answer, since the default session's shell is the agent's first child.
//
// Where it can (vforkable), the child is execChild's (vfork.go), which
// does not reset every signal handler before the execve.
func startProcess(prog string, argv []string, attr *os.ProcAttr) (pid, pidfd int, err error) {
	if vforkable(attr.Sys) {
		pid, pidfd, err = startVforked(prog, argv, attr.Env, attr.Dir, attr.Files)
		if !errors.Is(err, syscall.ENOSYS) && !errors.Is(err, syscall.EINVAL) {
			return pid, pidfd, err
		}
	}
	fds := make([]uintptr, len(attr.Files))
	for i, f := range attr.Files {
		fds[i] = f.Fd() // ^uintptr(0) for nil: not open in the child
	}
	sys := *attr.Sys
	pidfd = -1
	sys.PidFD = &pidfd
	pa := &syscall.ProcAttr{Dir: attr.Dir, Env: attr.Env, Files: fds, Sys: &sys}
	pid, _, err = syscall.StartProcess(prog, argv, pa)
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSYS) {
		// A kernel without CLONE_PIDFD (before 5.2).
		pidfd, sys.PidFD = -1, nil
		pid, _, err = syscall.StartProcess(prog, argv, pa)
	}
	runtime.KeepAlive(attr)
	if err != nil {
		return 0, -1, &os.PathError{Op: "fork/exec", Path: prog, Err: err}
	}
	return pid, pidfd, nil
}

// killGroup SIGKILLs the shell's whole process group: the shell and every
// process it started that did not move to a group of its own.
func (sh *shell) killGroup() {
	if sh.pid > 0 && !sh.exited.Load() {
		// The group is named by the shell's PID, which stays reserved while
		// the shell (the group's leader) is unreaped.
		unix.Kill(-sh.pid, unix.SIGKILL)
	}
}

// release kills the shell if it still runs and closes the agent's ends of
// its pipes. It does not wait: the reaper collects the shell.
func (sh *shell) release(ep int) {
	if !sh.exited.Load() {
		sh.signal(syscall.SIGKILL)
	}
	if !sh.eof {
		unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, sh.status, nil)
	}
	unix.Close(sh.status)
	unix.Close(sh.in)
	unix.Close(sh.inPeek)
	sh.pidMu.Lock()
	if sh.pidfd >= 0 {
		unix.Close(sh.pidfd)
	}
	sh.pidfd = released
	sh.pidMu.Unlock()
}
