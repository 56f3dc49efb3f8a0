package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/rename"
)

// A warm gVisor sandbox is named, when it is handed out, by a namer the
// daemon started in it with CAP_SYS_ADMIN (package rename), which the
// agent does not have. So that the naming and the sandbox's first call
// run at once instead of one after the other, the namer tells the agent on
// a FIFO of the agent's run directory when it waits and when it named the
// sandbox, and the agent holds the first call that carries the name
// (takeName) until then: the call's command never sees the old hostname
// or the old /etc/hostname. Nothing else ever reads the FIFO: it is read
// once, by that call, and then removed.

// namerLink is the agent's end of the namer's FIFO.
type namerLink struct {
	path string
	fd   int // opened read-write: never end of file, never blocks a writer's open
}

// namerWait bounds how long a call waits for a namer that said it waits:
// its naming is a few system calls, and the daemon tears the sandbox down
// if the namer never answers.
const namerWait = 10 * time.Second

// namerSlice is how long the call waits for the namer in one system call
// before it lets the agent's other goroutines run (see await).
const namerSlice = 5 * time.Millisecond

// maxNamerTalk bounds what is read from the FIFO: a namer says at most
// three short lines.
const maxNamerTalk = 256

// openNamerLink makes the FIFO in dir (replacing whatever is there) and
// opens it.
func openNamerLink(dir string) (*namerLink, error) {
	path := filepath.Join(dir, rename.TellFIFO)
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("removing %s: %w", path, err)
	}
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("making %s: %w", path, err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Unlink(path)
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return &namerLink{path: path, fd: fd}, nil
}

// await returns once no namer waits any more: at once if none said it
// waits, else when it says how its naming went (an error if it failed or
// did not say in time). The link is closed and removed afterwards: a
// sandbox is named once.
//
// It is on the way of the take's call, so every system call it makes is
// raw, and it waits in ppoll, holding its thread, not in the runtime's
// poller: closing an *os.File goes through syscall.Syscall, which wakes the
// runtime's monitor thread (see package rawio), and once awake that thread
// polled every 20 us through the take and the sandbox's next call,
// preempting the agent's goroutine with a signal every 10 ms of them (runsc
// --strace: about 25 system calls and two signals on the way of the take
// and of the call after it). The namer answers within a few system calls;
// a wait longer than namerSlice lets the agent's other goroutines run
// between slices.
func (l *namerLink) await(ctx context.Context) error {
	defer l.close()
	deadline := time.Now().Add(namerWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	var talk [maxNamerTalk]byte
	n := 0
	for first := true; ; first = false {
		got, errno := l.readSome(talk[n:])
		if errno != 0 && errno != unix.EAGAIN {
			return fmt.Errorf("reading what the sandbox's namer said: %w", errno)
		}
		n += got
		last := lastLine(talk[:n])
		switch {
		case first && last == "":
			return nil // no namer: the daemon named the sandbox itself
		case last == rename.TellError:
			return errors.New("the sandbox's namer could not name it")
		case last != rename.TellReady:
			return nil // ok, or gone (the daemon named it otherwise)
		case n == len(talk):
			return errors.New("the sandbox's namer said too much")
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("the sandbox's namer did not answer: %w", err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("the sandbox's namer did not answer: %w", context.DeadlineExceeded)
		}
		if !l.poll(min(left, namerSlice)) {
			runtime.Gosched()
		}
	}
}

// readSome reads what the FIFO holds into p, with raw reads until it is
// empty or p is full, or it holds a line that ends the namer's talk (so
// that a namer that answered before the call looked costs one read).
func (l *namerLink) readSome(p []byte) (int, unix.Errno) {
	n := 0
	for n < len(p) {
		r, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(l.fd), uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return n, errno
		}
		n += int(r)
		if r == 0 || (p[n-1] == '\n' && lastLine(p[:n]) != rename.TellReady) {
			break
		}
	}
	return n, 0
}

// poll waits up to d for the FIFO to hold something, in a raw ppoll, and
// says whether it does (false also when a signal came).
func (l *namerLink) poll(d time.Duration) bool {
	fds := [1]unix.PollFd{{Fd: int32(l.fd), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	n, _, errno := unix.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return errno == 0 && n > 0
}

// lastLine returns the last whole line of talk, "" if there is none.
func lastLine(talk []byte) string {
	i := bytes.LastIndexByte(talk, '\n')
	if i < 0 {
		return ""
	}
	return string(talk[bytes.LastIndexByte(talk[:i], '\n')+1 : i])
}

// close closes and removes the FIFO, with raw system calls (see await).
func (l *namerLink) close() {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(l.fd), 0, 0)
	if p, err := unix.BytePtrFromString(l.path); err == nil {
		unix.RawSyscall(unix.SYS_UNLINKAT, atFDCWD, uintptr(unsafe.Pointer(p)), 0)
	}
}

// atFDCWD is AT_FDCWD as a system call argument.
var atFDCWD = func() uintptr { fd := unix.AT_FDCWD; return uintptr(fd) }()
