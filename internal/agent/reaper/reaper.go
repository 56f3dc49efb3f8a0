// Package reaper is the agent's init duty: it reaps every child process of
// the agent, its own children and the orphans the kernel re-parents to it,
// and hands each exit status to whoever asked for that PID.
//
// It is the only code in the agent that waits on processes. Nothing else may
// call wait4, exec.Cmd.Wait or os.Process.Wait: a second waiter would race
// the reaper's wait4(-1) and either steal a status or get ECHILD. Children
// are started through Reaper.Start, which registers interest in the PID
// before the child can be reaped.
//
// Why Start instead of "start, then register": a child can exit and be
// reaped before its parent gets around to registering its PID. Start counts
// the starts in flight and, while any is in flight, keeps the statuses that
// nobody claimed. A kept status is only handed to a starter if it was reaped
// after that starter's fork, because a PID cannot be reused before its
// previous holder is reaped: so a kept status for the same PID from before
// the fork belongs to an older process and is never mistaken for the new
// one.
package reaper

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// maxUnclaimed bounds the statuses kept while starts are in flight, so an
// orphan storm cannot grow memory without limit.
const maxUnclaimed = 4096

// Status is how a process ended.
type Status struct {
	PID int
	WS  unix.WaitStatus
}

// ExitCode is the shell convention: the exit status, or 128+signal when
// the process was killed by a signal.
func (s Status) ExitCode() int {
	switch {
	case s.WS.Exited():
		return s.WS.ExitStatus()
	case s.WS.Signaled():
		return 128 + int(s.WS.Signal())
	}
	return -1
}

type kept struct {
	status Status
	seq    uint64
}

// Reaper reaps children. Create it with New before the agent starts any
// child, then run Run.
type Reaper struct {
	log  *slog.Logger
	sigs chan os.Signal
	kick chan struct{} // Kick: reap now

	mu        sync.Mutex
	watchers  map[int]func(Status)
	pending   int    // Start calls between fork and registration
	seq       uint64 // number of statuses reaped so far
	unclaimed map[int]kept
}

// New makes the calling process a reaper. When it is not PID 1 (tests, or
// an agent run by hand) it asks the kernel to re-parent orphaned
// descendants to it (PR_SET_CHILD_SUBREAPER), so that it behaves the same as
// init inside a sandbox.
func New(log *slog.Logger) (*Reaper, error) {
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			return nil, fmt.Errorf("becoming a child subreaper: %w", err)
		}
	}
	r := &Reaper{
		log:       log,
		sigs:      make(chan os.Signal, 1),
		kick:      make(chan struct{}, 1),
		watchers:  make(map[int]func(Status)),
		unclaimed: make(map[int]kept),
	}
	// Subscribe now, not in Run, so no SIGCHLD between New and Run is lost.
	signal.Notify(r.sigs, unix.SIGCHLD)
	return r, nil
}

// Run reaps until ctx is done. It must be running for exit statuses to be
// delivered.
func (r *Reaper) Run(ctx context.Context) error {
	defer signal.Stop(r.sigs)
	for {
		r.reapAll()
		select {
		case <-ctx.Done():
			return nil
		case <-r.sigs:
		case <-r.kick:
		}
	}
}

// Kick makes the reaper reap now, as a SIGCHLD would: for a caller that
// learnt of a child's exit sooner (a pidfd in Go's poller wakes one
// thread; the signal wakes the thread it lands on, which then wakes the
// one waiting for signals). It never blocks.
func (r *Reaper) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// reapAll collects every status that is ready. SIGCHLD is not queued (many
// exits can raise one signal), so one signal means "loop until nothing is
// left", never "one child exited".
func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		// __WALL also reaps children cloned with an exit signal other than
		// SIGCHLD, which init must not leave as zombies either.
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none ready
			return
		}
		r.dispatch(Status{PID: pid, WS: ws})
	}
}

func (r *Reaper) dispatch(st Status) {
	r.mu.Lock()
	r.seq++
	fn, ok := r.watchers[st.PID]
	if ok {
		delete(r.watchers, st.PID)
	} else if r.pending > 0 && len(r.unclaimed) < maxUnclaimed {
		r.unclaimed[st.PID] = kept{status: st, seq: r.seq}
	}
	r.mu.Unlock()
	if ok {
		fn(st)
		return
	}
	r.log.Debug("reaped orphan", "pid", st.PID, "exit", st.ExitCode())
}

// Start calls start, which must create exactly one child process and return
// its PID, and arranges for onExit to be called exactly once with the
// child's status once it is reaped. onExit runs on the reaper's goroutine,
// or on the caller's before Start returns if the child was already reaped;
// either way it must not block. onExit is not called if start fails.
func (r *Reaper) Start(start func() (int, error), onExit func(Status)) (int, error) {
	r.mu.Lock()
	r.pending++
	before := r.seq
	r.mu.Unlock()

	pid, err := start()

	r.mu.Lock()
	r.pending--
	var claimed *Status
	if err == nil {
		if k, ok := r.unclaimed[pid]; ok && k.seq > before {
			delete(r.unclaimed, pid)
			claimed = &k.status
		} else {
			r.watchers[pid] = onExit
		}
	}
	if r.pending == 0 {
		// Every starter has registered: what is left belongs to nobody.
		clear(r.unclaimed)
	}
	r.mu.Unlock()

	if err != nil {
		return 0, err
	}
	if claimed != nil {
		onExit(*claimed)
	}
	return pid, nil
}

// Forget drops interest in pid; its status will be reaped and discarded.
// It reports whether the interest was still there (false: onExit has
// been called, or is being called).
func (r *Reaper) Forget(pid int) bool {
	r.mu.Lock()
	_, ok := r.watchers[pid]
	delete(r.watchers, pid)
	r.mu.Unlock()
	return ok
}
