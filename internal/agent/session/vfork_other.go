//go:build !amd64

package session

import "golang.org/x/sys/unix"

// cloneExec is written for amd64 only: elsewhere shells start through
// syscall.StartProcess.
func cloneExec(flags, stack, pidfd uintptr) (pid, errno uintptr) {
	return 0, uintptr(unix.ENOSYS)
}
