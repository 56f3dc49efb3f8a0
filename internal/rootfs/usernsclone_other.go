//go:build !amd64

package rootfs

import "golang.org/x/sys/unix"

// cloneUserNSMaker is written for amd64 only: elsewhere a user namespace
// is made by unshare(1) (IDRange.openUserNSByUnshare).
func cloneUserNSMaker(flags, stack uintptr) (pid, errno uintptr) {
	return 0, uintptr(unix.ENOSYS)
}
