package agent

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// On gVisor the agent's connections read and write with raw system calls.
//
// Go's runtime has a monitor thread (sysmon) that sleeps for good while
// the program is idle and is woken by the next system call the program
// makes through syscall.Syscall; awake, it polls every 20 us until the
// program is idle again. In gVisor each of its sleeps is a system call of
// its own, and a wake-up two futex calls: counted under runsc --strace,
// 16 sleeps and 15 futex calls per warm `exec true`, more than the
// agent's own work, on the sandbox's one CPU. A raw system call
// (syscall.RawSyscall) does not wake it. Reads and writes of a socket are
// non-blocking, and wait for readiness in the runtime's poller as
// net.Conn's own do (syscall.RawConn), so nothing blocks a thread; the
// session code does the same on a command's path (see
// internal/agent/session's raw system calls).

// rawConn is a unix socket connection whose Read and Write make raw
// system calls.
type rawConn struct {
	*net.UnixConn
	rc syscall.RawConn
}

// wrapRaw returns c as a rawConn when it is a unix socket, else c.
func wrapRaw(c net.Conn) net.Conn {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return c
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawConn{UnixConn: uc, rc: rc}
}

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(r), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawConn) Write(p []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
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
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

func (c *rawConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "unix", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
