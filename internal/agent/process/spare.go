package process

import (
	"os"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

// A spare is a spawn wrapper started ahead of the next process (see
// package spawn): already running, in the user cgroup, with its OOM score
// reset, its own session, and fresh pipes for stdin, stdout, stderr and
// errors. Start hands it the process's command, user, directory and
// environment, and it becomes that process (same PID) without the Go
// runtime's start-up on the caller's time. The manager keeps one after
// the first process has started (so a sandbox that never runs a
// background process never has one) and starts the next in the
// background after each use.
//
// The reaper remains its only waiter: it is the agent's child, started
// through Reaper.Start, and its exit goes to the process that claimed it,
// or, unclaimed, only retires it. A spare that died while waiting (the
// pid guard kills every user process) is found dead at the next Start,
// which then starts its process the ordinary way.
type spare struct {
	proc *os.Process
	pid  int
	// The agent's ends: stdin's write end, stdout's, stderr's and the
	// error pipe's read ends, and the request pipe's write end.
	stdin, stdout, stderr, errR, req *os.File

	// owner is the process that claimed the spare; dead is set when it
	// was reaped unclaimed. Guarded by Manager.spareMu.
	owner *Proc
	dead  bool
}

// The spare's descriptors.
const (
	spareErrFD     = 3
	spareRequestFD = 4
)

// startSpare starts a spare, unless one is there or starting, or the
// manager is closed. It runs in the background.
func (m *Manager) startSpare() {
	m.spareMu.Lock()
	if m.spare != nil || m.spareStarting || m.spareClosed {
		m.spareMu.Unlock()
		return
	}
	m.spareStarting = true
	// Added under spareMu: closeSpare, which sets spareClosed under it,
	// runs before Close waits for wg.
	m.wg.Add(1)
	m.spareMu.Unlock()
	go func() {
		defer m.wg.Done()
		sp := m.newSpare()
		m.spareMu.Lock()
		m.spareStarting = false
		closed := m.spareClosed
		keep := sp != nil && !closed && !sp.dead
		if keep {
			m.spare = sp
		}
		dead := sp != nil && sp.dead
		m.spareMu.Unlock()
		switch {
		case keep || sp == nil:
		case dead:
			sp.closeFiles()
		default: // the manager closed meanwhile
			sp.proc.Signal(syscall.SIGKILL)
			sp.closeFiles()
		}
	}()
}

// newSpare forks a spare, or returns nil when it cannot.
func (m *Manager) newSpare() *spare {
	sp := &spare{}
	argv := spawn.SpareArgv(m.cfg.Self, spawn.Options{CgroupRoot: m.cfg.CgroupRoot, ErrFD: spareErrFD,
		CloseErrFD: true, RequestFD: spareRequestFD})
	if !m.startSpareProcess(sp, argv, "/", []string{}, func(st reaper.Status) { m.spareExited(sp, st) }) {
		return nil
	}
	return sp
}

// startSpareProcess starts argv as sp's process, in its own session, with
// a fresh pipe on each of its fds 0-4 (in the order of the const block
// above), and keeps the agent's ends in sp; onExit gets its status. False
// when it could not.
func (m *Manager) startSpareProcess(sp *spare, argv []string, dir string, env []string, onExit func(reaper.Status)) bool {
	var child, agent [5]*os.File
	closeAll := func() {
		for i := range child {
			if child[i] != nil {
				child[i].Close()
				agent[i].Close()
			}
		}
	}
	for i := range child {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return false
		}
		// The child reads its stdin and the request pipe and writes the rest.
		if i == 0 || i == 4 {
			child[i], agent[i] = r, w
		} else {
			child[i], agent[i] = w, r
		}
	}
	attr := &os.ProcAttr{Dir: dir, Env: env, Files: child[:], Sys: &syscall.SysProcAttr{Setsid: true}}
	pid, err := m.cfg.Reaper.Start(func() (int, error) {
		p, err := os.StartProcess(argv[0], argv, attr)
		if err != nil {
			return 0, err
		}
		sp.proc = p
		return p.Pid, nil
	}, onExit)
	if err != nil {
		closeAll()
		return false
	}
	for _, f := range child {
		f.Close()
	}
	sp.pid = pid
	sp.stdin, sp.stdout, sp.stderr, sp.errR, sp.req = agent[0], agent[1], agent[2], agent[3], agent[4]
	return true
}

// spareExited hands the spare's exit to its process, or retires it. It
// runs on the reaper's goroutine and must not block.
func (m *Manager) spareExited(sp *spare, st reaper.Status) {
	m.spareMu.Lock()
	owner := sp.owner
	// Kept: its files are set (it was published); otherwise startSpare
	// (or startLoginSpare) finds it dead and closes them.
	kept := m.spare == sp || m.login != nil && m.login.sp == sp
	if owner == nil {
		sp.dead = true
		if m.spare == sp {
			m.spare = nil
		}
		if m.login != nil && m.login.sp == sp {
			m.login = nil
		}
	}
	m.spareMu.Unlock()
	if owner != nil {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); owner.finish(st) }()
		return
	}
	if kept {
		sp.closeFiles()
	}
}

// closeFiles closes the agent's ends of an unclaimed spare's pipes.
func (sp *spare) closeFiles() {
	for _, f := range []*os.File{sp.stdin, sp.stdout, sp.stderr, sp.errR, sp.req} {
		f.Close()
	}
}

// claimSpare gives the spare to p, or returns nil when there is none
// alive.
func (m *Manager) claimSpare(p *Proc) *spare {
	m.spareMu.Lock()
	defer m.spareMu.Unlock()
	sp := m.spare
	m.spare = nil
	if sp == nil || sp.dead {
		return nil
	}
	sp.owner = p
	return sp
}

// closeSpare stops keeping spares and kills the ones there are.
func (m *Manager) closeSpare() {
	m.spareMu.Lock()
	m.spareClosed = true
	sp, ls, fs := m.spare, m.login, m.fork
	m.spare, m.login, m.fork = nil, nil, nil
	m.spareMu.Unlock()
	if sp != nil {
		sp.proc.Signal(syscall.SIGKILL)
		sp.closeFiles()
	}
	if ls != nil {
		ls.discard()
	}
	if fs != nil {
		fs.discard()
	}
}

// startFromSpare hands o to the claimed spare sp; the rest is as for a
// process forked for o. A spare that died before it took the request
// makes the process an error.
func (p *Proc) startFromSpare(o StartOptions, sp *spare) {
	req := spawn.Request{Argv: append([]string{p.m.cfg.Shell}, loginArgs(o)...), Env: o.Env, Dir: o.Cwd}
	if o.Account != nil {
		req.UID, req.GID = &o.Account.UID, &o.Account.GID
	}
	sp.req.SetWriteDeadline(time.Now().Add(p.m.cfg.StartTimeout))
	err := spawn.WriteRequest(sp.req, req)
	sp.req.Close()
	p.mu.Lock()
	if err != nil {
		p.info.Status, p.info.Reason = Error, "starting the process: the spawn wrapper did not take it"
	}
	p.mu.Unlock()
	p.run(o, sp.proc, sp.pid, sp.stdin, [2]*os.File{sp.stdout, sp.stderr}, sp.errR)
}
