//go:build !amd64

package rename

import "golang.org/x/sys/unix"

// cloneKeeper is written for amd64 only: elsewhere the namer keeps its
// capabilities and names the sandbox itself.
func cloneKeeper(flags, stack uintptr) (pid, errno uintptr) {
	return 0, uintptr(unix.ENOSYS)
}
