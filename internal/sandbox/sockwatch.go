package sandbox

import (
	"errors"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// socketWatch wakes a gVisor boot when its agent binds its socket.
//
// Why: a gVisor agent binds its socket itself (--host-uds=create), in the
// run directory the daemon bind-mounted into the sandbox, 20-100 ms after
// `runsc run --detach` returned (its Go runtime's start in the Sentry).
// waitAgent used to dial it every millisecond until then: 20-100 dials,
// each a socket, a connect that failed, a close, a pidfd poll and a
// timer's wake-up of the daemon, on a host whose two CPUs the booting
// sandbox shares and where each wake-up and system call is expensive
// (a PVM guest). An inotify watch set on the directory before runsc
// starts sees the bind's creation of the socket (made on the host, by
// the Sentry or its gofer), and the wait is one read in the runtime's
// poller. The watch is the boot's own and closed when the wait ends: an
// instance per booting sandbox, not per running one (root's inotify
// instances are limited, 128 by default, and shared with the host).
// When one cannot be had, the boot polls as before.
type socketWatch struct {
	f *os.File
	// broken: a read failed otherwise than at its deadline; the caller
	// polls instead (a read that fails at once would make its wait a
	// busy loop).
	broken bool
}

// watchSocketDir watches dir for a new entry; nil when inotify is not
// available (the caller then polls).
func watchSocketDir(dir string) *socketWatch {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil
	}
	// Non-blocking: os.NewFile puts it in the runtime's poller, so that
	// the wait holds no thread and can have a deadline.
	return &socketWatch{f: os.NewFile(uintptr(fd), "inotify")}
}

// wait returns once something was created in the directory since the
// last wait (at once if it was already), or limit passed, or the watch
// broke (usable then says false). Events are not told apart: any new
// entry is a reason to dial again.
func (w *socketWatch) wait(limit time.Duration) {
	var buf [512]byte // several events: unix.SizeofInotifyEvent + a name each
	w.f.SetReadDeadline(time.Now().Add(limit))
	if _, err := w.f.Read(buf[:]); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		w.broken = true
	}
}

// usable reports whether the watch can still be waited on.
func (w *socketWatch) usable() bool { return w != nil && !w.broken }

func (w *socketWatch) close() {
	if w != nil {
		w.f.Close()
	}
}

// notBound reports whether err is a dial to a socket path that does not
// exist yet (as opposed to one that exists but is not listening, or an
// agent that answered badly).
func notBound(err error) bool {
	return errors.Is(err, syscall.ENOENT)
}
