package session

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrStatusLost is returned when the command removed, replaced or made
// unwritable the session's status FIFO (DIR/s), through which the shell
// reports each command's end. The shell writes there by path, so after
// that its status line goes elsewhere (a regular file it creates, or a
// FIFO nobody reads, whose open blocks it for ever) and the call would
// wait until its timeout, or for ever without one. The agent kills the
// shell with the command instead, at once, and the next command gets a
// fresh shell. It matches ErrTerminated: the caller sees the same code.
var ErrStatusLost = fmt.Errorf("%w: the command removed or replaced the session's status FIFO", ErrTerminated)

// The status FIFO's guard: an inotify watch on the FIFO the shell was
// started with, in the session's epoll set. It reports the removal of the
// FIFO's last link or a rename over it (IN_ATTRIB: the link count
// changed), its own renaming (IN_MOVE_SELF), and changes of its owner or
// mode (IN_ATTRIB). Nothing the agent or the shell does to the FIFO on a
// command's way (open, read, write, close) is among these, so the watch
// costs no system call per command: only user code that touches the FIFO
// wakes it.
const statusWatchMask = unix.IN_ATTRIB | unix.IN_MOVE_SELF | unix.IN_DELETE_SELF

// newStatusWatcher makes the session's inotify instance and puts it in
// its epoll set.
func newStatusWatcher(ep int) (int, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("creating inotify: %w", err)
	}
	if err := epollAdd(ep, fd, unix.EPOLLIN); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// watchStatus watches the status FIFO at path and returns the watch.
// Called after the FIFO was made and given to the session's user, before
// the agent opens it: a replacement between the watch and the open is
// then reported.
func (s *Session) watchStatus(path string) (int, error) {
	wd, err := unix.InotifyAddWatch(s.notify, path, statusWatchMask)
	if err != nil {
		return -1, fmt.Errorf("watching the status FIFO: %w", err)
	}
	return wd, nil
}

// unwatchStatus ends watch wd (-1: none). Its IN_IGNORED event, and any
// late event of the old FIFO, are dropped by the next statusChanged.
func (s *Session) unwatchStatus(wd int) {
	if wd >= 0 {
		unix.InotifyRmWatch(s.notify, uint32(wd))
	}
}

// statusChanged reads the session's inotify events and reports whether
// one was about sh's status FIFO and left it unusable (see statusIntact).
func (s *Session) statusChanged(sh *shell) bool {
	var buf [1024]byte
	touched := false
	for {
		n, err := rawRead(s.notify, buf[:])
		if err == unix.EINTR {
			continue
		}
		if n <= 0 {
			break
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if sh != nil && int(ev.Wd) == sh.watch && ev.Mask&unix.IN_IGNORED == 0 {
				touched = true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
	return touched && !s.statusIntact(sh)
}

// statusIntact reports whether the path of the status FIFO still names
// sh's FIFO, and the shell can still open it for writing (a root shell
// can whatever the mode; the session user's needs to own it and have
// write permission, as the agent made it).
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

// errStatusLostAtStart: the status FIFO was replaced while the shell
// started.
var errStatusLostAtStart = errors.New("the status FIFO was removed or replaced while the shell started")
