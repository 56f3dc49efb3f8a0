package session

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// statusFD is the shell's file descriptor for the status pipe.
const statusFD = 3

// maxStatusLine bounds a status line; a longer one means the protocol is
// broken and the shell is killed.
const maxStatusLine = 256

// shell is one running shell process of a session.
type shell struct {
	pid  int
	proc *os.Process // signals go through its pidfd: never to a reused PID
	bash bool

	in int // write end of the shell's stdin, non-blocking
	// inPeek is the agent's copy of the read end of the shell's stdin. It
	// is never read: it tells whether a dead shell had read the last line
	// (see unread), and it keeps writes from failing with EPIPE.
	inPeek int
	status int // read end of the status pipe (the shell's fd 3), non-blocking
	line   []byte
	eof    bool // the status pipe reached EOF

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
	var st, in [2]int
	if err := unix.Pipe2(st[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("creating status pipe: %w", err)
	}
	if err := unix.Pipe2(in[:], unix.O_CLOEXEC); err != nil {
		unix.Close(st[0])
		unix.Close(st[1])
		return nil, fmt.Errorf("creating stdin pipe: %w", err)
	}
	sh := &shell{status: st[0], in: in[1], inPeek: in[0], bash: filepath.Base(cfg.Shell) == "bash"}
	acct := s.acct
	if acct != nil && cfg.Users != nil {
		// Again at every start: user code may have edited /etc/passwd.
		a, err := cfg.Users.Ensure(acct.Name)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrUser, acct.Name, err)
		}
		acct = &a
	}
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
			if sh.proc != nil {
				sh.proc.Release()
			}
		}
	}()
	statusW := os.NewFile(uintptr(st[1]), "status")
	defer statusW.Close()
	stdin, err := dupFile(in[0], "stdin")
	if err != nil {
		return nil, err
	}
	defer stdin.Close()

	argv0 := filepath.Base(cfg.Shell)
	var args []string
	if sh.bash {
		args = []string{"--noprofile", "--norc"}
	}
	so := spawn.Options{CgroupRoot: cfg.CgroupRoot, ErrFD: statusFD, Argv0: argv0}
	if acct != nil {
		so.UID, so.GID = &acct.UID, &acct.GID
	}
	argv := spawn.Argv(cfg.Self, so, cfg.Shell, args...)
	prog := argv[0]
	init := dispatchInit(s.dir) + "command printf 'ready\\n' >&3\n"
	if sh.bash {
		init = "shopt -s expand_aliases; " + unwindInit(s.dir) + init
	}
	attr := &os.ProcAttr{
		Dir: cwd,
		Env: withInit(envList(sh.env), init),
		// The shell's own stdout and stderr go nowhere: commands get their
		// own FIFOs, and what the shell says outside a command (a trace of
		// the agent's own lines under `set -x`) belongs to nobody.
		Files: []*os.File{stdin, s.m.devNull, s.m.devNull, statusW},
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
	_, err = cfg.Reaper.Start(func() (int, error) {
		p, err := os.StartProcess(prog, argv, attr)
		if err != nil {
			return 0, err
		}
		sh.proc, sh.pid = p, p.Pid
		return p.Pid, nil
	}, func(st reaper.Status) {
		sh.code.Store(int32(st.ExitCode()))
		sh.exited.Store(true)
		s.wake.wake()
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", cfg.Shell, err)
	}
	statusW.Close()
	stdin.Close()
	if adopt {
		// Fails closed: the deferred clean-up kills the shell.
		if err := spawn.Adopt(cfg.CgroupRoot, sh.pid); err != nil {
			return nil, err
		}
	}
	if launched != nil {
		launched()
	}
	if err := unix.SetNonblock(sh.status, true); err != nil {
		return nil, err
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
	if err := sh.send([]byte(initLine)); err != nil {
		return nil, fmt.Errorf("talking to the shell: %w", err)
	}
	if err := s.awaitReady(ctx, sh); err != nil {
		return nil, err
	}
	return sh, nil
}

// initVar carries the shell's start-up text (the dispatch variables, the
// unwind trap, the ready line) in its environment, and initLine, the
// shell's first line, runs it and drops the variable before anything else
// runs. A shell reads its stdin, a pipe, one byte (one system call) at a
// time: sent as a line, the ~1.8 KB text cost as many reads, tens of
// microseconds each on gVisor (a cold start's first command waits for
// them), where an environment variable costs none.
const (
	initVar  = "__sbx_init"
	initLine = `command eval "$` + initVar + `"; command unset ` + initVar + "\n"
)

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
		wait := time.Until(deadline)
		if wait <= 0 {
			return fmt.Errorf("the shell did not answer within %s", s.m.cfg.StartTimeout)
		}
		if _, err := unix.EpollWait(s.ep, events, int(wait/time.Millisecond)+1); err != nil && err != unix.EINTR {
			return fmt.Errorf("epoll wait: %w", err)
		}
		s.wake.reset()
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
		n, err := unix.Write(sh.in, line)
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

// signal sends sig to the shell itself, through its pidfd.
func (sh *shell) signal(sig syscall.Signal) {
	if sh.proc != nil && !sh.exited.Load() {
		sh.proc.Signal(sig)
	}
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
	sh.proc.Release()
}
