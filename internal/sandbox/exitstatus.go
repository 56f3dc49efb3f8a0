package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pidfdInfo is the first version of the kernel's struct pidfd_info
// (Linux 6.15): the ioctl takes the size it is given.
type pidfdInfo struct {
	Mask                                                              uint64
	CgroupID                                                          uint64
	PID, TGID, PPID, RUID, RGID, EUID, EGID, SUID, SGID, FSUID, FSGID uint32
	ExitCode                                                          int32
}

const (
	// pidfdGetInfo is _IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info).
	pidfdGetInfo  = 3<<30 | uint(unsafe.Sizeof(pidfdInfo{}))<<16 | 0xFF<<8 | 11
	pidfdInfoExit = 1 << 3
)

// exitStatus says how the agent (the container's init) ended. The daemon
// is not its parent (the runtime's process was; the host's init reaps
// it), so it cannot wait for it. Since Linux 6.15 the kernel gives the
// wait status to a pidfd's holder once the process is reaped; before
// that, a zombie's status is field 52 of /proc/<pid>/stat, read between
// two checks through the pidfd that the process is still unreaped (so the
// PID cannot have been reused meanwhile).
func (inst *instance) exitStatus() string {
	for i := 0; i < 40; i++ {
		reaped, ws, err := inst.pidfdExit()
		switch {
		case err != nil:
			return "unknown (" + err.Error() + ")"
		case reaped:
			return describeWaitStatus(ws)
		}
		if ws, ok := zombieStatus(inst.pid); ok {
			if reaped, _, err := inst.pidfdExit(); err == nil && !reaped {
				return describeWaitStatus(ws)
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return "unknown"
}

// pidfdExit asks the kernel for the exit status through the pidfd:
// reaped is false while the process is still a zombie.
func (inst *instance) pidfdExit() (reaped bool, ws unix.WaitStatus, err error) {
	rc, err := inst.pidfd.SyscallConn()
	if err != nil {
		return false, 0, err
	}
	info := pidfdInfo{Mask: pidfdInfoExit}
	var errno unix.Errno
	rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(pidfdGetInfo), uintptr(unsafe.Pointer(&info)))
	})
	switch {
	case errno == unix.ENOTTY || errno == unix.EINVAL:
		return false, 0, errors.New("the kernel does not report it before Linux 6.15")
	case errno != 0:
		return false, 0, errno
	}
	return info.Mask&pidfdInfoExit != 0, unix.WaitStatus(info.ExitCode), nil
}

// zombieStatus reads the wait status of the zombie pid from /proc.
func zombieStatus(pid int) (unix.WaitStatus, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the command (which may hold spaces) start at ") ".
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state); field 52 (exit_code) is f[49].
	if len(f) < 50 || f[0] != "Z" {
		return 0, false
	}
	code, err := strconv.Atoi(f[49])
	if err != nil {
		return 0, false
	}
	return unix.WaitStatus(code), true
}

func describeWaitStatus(ws unix.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return fmt.Sprintf("killed by signal %d (%s)", int(ws.Signal()), unix.SignalName(ws.Signal()))
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}
