package agent

import (
	"io"
	"net"
	"syscall"

	"github.com/sandboxd/sandboxd/internal/agent/rawio"
)

// On gVisor the agent's connections read and write with raw system calls
// (see package rawio: a call through syscall.Syscall wakes the Go
// runtime's monitor thread, which then costs system calls of its own on
// the sandbox's one CPU); the session code does the same on a command's
// path (see internal/agent/session's raw system calls).

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
	n, err := rawio.Read(c.rc, p)
	if err != nil && err != io.EOF {
		return n, c.opError("read", err)
	}
	return n, err
}

func (c *rawConn) Write(p []byte) (int, error) {
	n, err := rawio.Write(c.rc, p)
	if err != nil {
		return n, c.opError("write", err)
	}
	return n, nil
}

func (c *rawConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "unix", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
