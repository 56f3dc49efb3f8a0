// Package rawio reads and writes non-blocking descriptors with raw system
// calls (syscall.RawSyscall), waiting for readiness in the Go runtime's
// poller (syscall.RawConn), as net.Conn's own reads and writes wait.
//
// Why: Go's runtime has a monitor thread (sysmon) that sleeps for good
// while the program is idle and is woken by the next system call the
// program makes through syscall.Syscall; awake, it polls every 20 us until
// the program is idle again. In gVisor each of its sleeps is a system call
// of its own, and a wake-up two futex calls: counted under runsc --strace,
// 16 sleeps and 15 futex calls per warm `exec true`, more than the agent's
// own work, on the sandbox's one CPU. A raw system call does not wake it.
// Nothing here blocks a thread: a descriptor that is not ready is waited
// for in the poller. It must only be given non-blocking descriptors.
package rawio

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

// Read reads into p from rc's descriptor: what one read(2) returns,
// io.EOF at the end of file, a poller error (a deadline, a close) as the
// poller gives it, and a failed read as an *os.SyscallError.
func Read(rc syscall.RawConn, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// Write writes all of p to rc's descriptor, waiting in the poller while
// it is full; errors as Read's.
func Write(rc syscall.RawConn, p []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(len(p)-n))
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return n, err
	case errno != 0:
		return n, os.NewSyscallError("write", errno)
	}
	return n, nil
}

// Reader is an io.Reader of a non-blocking descriptor (see Read).
type Reader struct{ RC syscall.RawConn }

func (r Reader) Read(p []byte) (int, error) { return Read(r.RC, p) }
