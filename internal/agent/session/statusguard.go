package session

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ErrStatusLost is returned when the command removed, replaced or made
// unwritable the session's status FIFO (DIR/s), through which the shell
// reports each command's end. The shell writes there by path, so after
// that its status line goes elsewhere (a regular file it creates, or a
// FIFO nobody reads, whose open blocks it for ever) and the call would
// wait until its timeout, or for ever without one. The agent kills the
// shell with the command instead, and the next command gets a fresh
// shell. It matches ErrTerminated: the caller sees the same code.
var ErrStatusLost = fmt.Errorf("%w: the command removed or replaced the session's status FIFO", ErrTerminated)

// statusCheckInterval is how often, while a command runs, the agent
// checks that the status FIFO's path still names the FIFO it holds (see
// statusIntact). A command that lost it is killed within this time of
// its loss (at most twice it, from the command's start).
//
// Why a tick and not a watch: an inotify instance per session (4e56521,
// reverted) counts against the host-wide limit of the user owning every
// sandbox's user namespace, the host's root (fs.inotify.max_user_instances,
// 128 on Debian), so agents failed to start from the 116th sandbox on.
// The tick holds no kernel object: only a timer in the Go runtime while a
// call waits, and nothing between calls. A command that ends within the
// first interval (nearly all) makes no system call for it; a longer one
// makes two per interval (stat and fstat).
const statusCheckInterval = 500 * time.Millisecond

// checkStatus is the runner's tick: if the status FIFO is lost, the shell
// is killed with the command at once (ErrStatusLost) rather than asked to
// unwind: its answer would not come either.
func (r *runner) checkStatus(now time.Time) {
	r.nextCheck = now.Add(statusCheckInterval)
	if r.s.statusIntact(r.sh) {
		return
	}
	r.s.m.cfg.Log.Warn("session status FIFO removed or replaced; killing the shell", "session", r.s.id)
	r.startAbort(ErrStatusLost, false)
	r.lastKill = r.abortAt
	r.killShell(r.abortAt)
}

// statusIntact reports whether the path of the status FIFO still names
// sh's FIFO (same device and inode as the agent's descriptor), and the
// shell can still open it for writing: a root shell whatever the mode;
// the session user's needs to own it and have write permission, as the
// agent made it. A hard link, touch or chmod 0600 change none of this.
func (s *Session) statusIntact(sh *shell) bool {
	var at, own unix.Stat_t
	if unix.Stat(s.dir+"/"+statusFIFO, &at) != nil || unix.Fstat(sh.status, &own) != nil {
		return false
	}
	if at.Dev != own.Dev || at.Ino != own.Ino {
		return false
	}
	return sh.acct == nil || (int(at.Uid) == sh.acct.UID && at.Mode&0o200 != 0)
}
