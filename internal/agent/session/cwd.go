package session

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoCwd is returned by CurrentDir when the shell's working directory
// has been deleted.
var ErrNoCwd = errors.New("the session's working directory no longer exists")

// CurrentDir returns the session's working directory as its shell sees it
// now (after any cd), or, when no shell runs, where the next one will start
// (Cwd). File operations resolve relative paths against it.
//
// It reads /proc/<shell>/cwd, then checks through the shell's pidfd that
// the shell is still alive, so the answer cannot come from an unrelated
// process that was given the PID after the shell died.
func (s *Session) CurrentDir() (string, error) {
	s.shMu.Lock()
	sh := s.sh
	s.shMu.Unlock()
	if sh != nil && !sh.exited.Load() {
		dir, err := os.Readlink("/proc/" + strconv.Itoa(sh.pid) + "/cwd")
		if err == nil && sh.proc.Signal(syscall.Signal(0)) == nil {
			if strings.HasSuffix(dir, " (deleted)") {
				return "", ErrNoCwd
			}
			return dir, nil
		}
	}
	return s.Cwd(), nil
}
