package session

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls on a command's way are made raw (unix.RawSyscall):
// unlike unix.Syscall they do not wake the Go runtime's monitor thread,
// which in gVisor then costs a system call every 20 us until the agent is
// idle again, and two futex calls to wake it (see internal/agent's
// rawConn). Each of these calls returns at once: the descriptors are
// non-blocking, the files on a tmpfs, and waiting is done in the
// runtime's poller (Session.wait).

// atFDCWD is AT_FDCWD (-100) as a system call argument.
var atFDCWD = func() uintptr { fd := unix.AT_FDCWD; return uintptr(fd) }()

func rawRead(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

func rawOpen(path string, flags int, mode uint32) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(p)), uintptr(flags), uintptr(mode), 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func rawClose(fd int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

func rawUnlink(path string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	if _, _, e := unix.RawSyscall(unix.SYS_UNLINKAT, atFDCWD, uintptr(unsafe.Pointer(p)), 0); e != 0 {
		return e
	}
	return nil
}

func rawPwrite(fd int, p []byte, off int64) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall6(unix.SYS_PWRITE64, uintptr(fd), uintptr(ptr), uintptr(len(p)), uintptr(off), 0, 0)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

func rawFtruncate(fd int, size int64) error {
	if _, _, e := unix.RawSyscall(unix.SYS_FTRUNCATE, uintptr(fd), uintptr(size), 0); e != 0 {
		return e
	}
	return nil
}

func rawFstat(fd int) (unix.Stat_t, error) {
	var st unix.Stat_t
	if _, _, e := unix.RawSyscall(unix.SYS_FSTAT, uintptr(fd), uintptr(unsafe.Pointer(&st)), 0); e != 0 {
		return st, e
	}
	return st, nil
}

// rawResetAtime sets the access time of the file open at fd to 0 (the
// epoch), leaving its modification time (futimens).
func rawResetAtime(fd int) error {
	ts := [2]unix.Timespec{{Sec: 0, Nsec: 0}, {Nsec: unix.UTIME_OMIT}}
	if _, _, e := unix.RawSyscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return e
	}
	return nil
}

// rawEpollWait waits up to msec milliseconds for ep's events, holding
// the thread (see Session.waitBriefly).
func rawEpollWait(ep int, events []unix.EpollEvent, msec int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawEpollPoll returns ep's ready events without waiting.
func rawEpollPoll(ep int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawLstat is lstat: path's own status, a link's not its target's.
func rawLstat(path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return st, err
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_NEWFSTATAT, atFDCWD, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&st)), unix.AT_SYMLINK_NOFOLLOW, 0, 0); e != 0 {
		return st, e
	}
	return st, nil
}

// rawResetLinkAtime sets the access time of the link at path (not of its
// target) to 0, leaving its modification time.
func rawResetLinkAtime(path string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	ts := [2]unix.Timespec{{Sec: 0, Nsec: 0}, {Nsec: unix.UTIME_OMIT}}
	if _, _, e := unix.RawSyscall6(unix.SYS_UTIMENSAT, atFDCWD, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&ts[0])), unix.AT_SYMLINK_NOFOLLOW, 0, 0); e != 0 {
		return e
	}
	return nil
}
