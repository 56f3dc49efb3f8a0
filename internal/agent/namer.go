package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	f    *os.File // opened read-write: never end of file, never blocks a writer's open
}

// namerWait bounds how long a call waits for a namer that said it waits:
// its naming is a few system calls, and the daemon tears the sandbox down
// if the namer never answers.
const namerWait = 10 * time.Second

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
	return &namerLink{path: path, f: os.NewFile(uintptr(fd), path)}, nil
}

// await returns once no namer waits any more: at once if none said it
// waits, else when it says how its naming went (an error if it failed or
// did not say in time). The link is closed and removed afterwards: a
// sandbox is named once.
func (l *namerLink) await(ctx context.Context) error {
	defer l.close()
	ctx, cancel := context.WithTimeout(ctx, namerWait)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { l.f.SetReadDeadline(time.Now()) })
	defer stop()
	rc, err := l.f.SyscallConn()
	if err != nil {
		return err
	}
	var talk []byte
	var last string
	first := true
	buf := make([]byte, maxNamerTalk)
	err = rc.Read(func(fd uintptr) bool {
		for len(talk) < maxNamerTalk {
			// Raw: the call waiting here must not wake the runtime's
			// monitor thread (see rawConn).
			rest := buf[:maxNamerTalk-len(talk)]
			n, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
			if errno == unix.EINTR {
				continue
			}
			if errno != 0 || n == 0 {
				break
			}
			talk = append(talk, rest[:n]...)
		}
		if i := bytes.LastIndexByte(talk, '\n'); i >= 0 {
			lines := bytes.Split(talk[:i], []byte("\n"))
			last = string(lines[len(lines)-1])
		}
		waiting := last == rename.TellReady && len(talk) < maxNamerTalk
		if first && last == "" {
			return true // no namer: the daemon named the sandbox itself
		}
		first = false
		return !waiting
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("the sandbox's namer did not answer: %w", ctx.Err())
	case err != nil:
		return err
	case last == rename.TellError:
		return errors.New("the sandbox's namer could not name it")
	case last == rename.TellReady:
		return errors.New("the sandbox's namer said too much")
	}
	return nil // ok, gone (the daemon named it otherwise), or none
}

func (l *namerLink) close() {
	l.f.Close()
	unix.Unlink(l.path)
}
