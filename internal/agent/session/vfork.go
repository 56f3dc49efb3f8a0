package session

import (
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Why a clone of the agent's own for its shells. syscall.StartProcess's
// child, before it executes the shell, sets every signal the Go runtime
// handles back to its default, one rt_sigaction each (~56), so that a
// signal arriving before the execve cannot run Go's handler in a child
// that shares the agent's memory. In gVisor each is a trip through the
// Sentry, and the shell cannot start before them: ~60 system calls on the
// way of a cold start's first answer, whose default shell is started so.
// execChild needs none of them: the forking thread blocks every signal
// before the clone, the child inherits that mask, makes itself a session
// of its own (setsid: no signal sent to the agent's process group or any
// other reaches it) before anything else, and unblocks them only in the
// call before execve, which sets every caught signal to its default, as
// those resets would have (an ignored one stays ignored in both). Between
// the two calls only a signal sent to the child's own PID, which nobody
// but the suspended agent thread knows, could arrive.
//
// The child runs on a stack of its own (vforkStack) and shares the agent's
// memory (CLONE_VM) while the forking thread waits for its execve
// (CLONE_VFORK), as Go's own child does; it is nosplit code making raw
// system calls on vforkJob, which is set up before the clone and holds no
// pointers the child would write (no write barrier, nothing for the
// collector running on the agent's other threads).

// vforkJob is the child's work, set up under vforkMu before each clone.
var vforkJob struct {
	path, argv, envp, dir uintptr // *byte, **byte, **byte, *byte
	mask                  uint64  // the signal mask the shell starts with
	fds                   [4]int  // the child's 0..3 (-1: closed)
	nextfd                int     // above every descriptor in fds
	pidfd                 int32   // CLONE_PIDFD's answer
	step, errno           uintptr // what failed in the child
}

var (
	vforkMu    sync.Mutex
	vforkStack [32 << 10]byte
)

// startVforked starts prog like syscall.StartProcess with Setsid, Dir and
// files (at most four) as the child's descriptors 0..n-1, and returns its
// PID and a pidfd of it. It reports ENOSYS where it cannot (another
// architecture, more descriptors) and clone's error as clone gave it
// (EINVAL: a kernel without CLONE_PIDFD); the caller then starts the
// program the usual way.
//
//go:norace
func startVforked(prog string, argv, env []string, dir string, files []*os.File) (pid, pidfd int, err error) {
	if len(files) > len(vforkJob.fds) {
		return 0, -1, syscall.ENOSYS
	}
	// Go raises its own soft RLIMIT_NOFILE at start (to the hard limit
	// less one) and syscall's child puts the original back; this one
	// cannot, so it serves only where there was nothing to raise (a
	// sandbox's spec sets both limits alike).
	var nofile syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); err != nil || nofile.Cur != nofile.Max {
		return 0, -1, syscall.ENOSYS
	}
	path, err := syscall.BytePtrFromString(prog)
	if err != nil {
		return 0, -1, err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return 0, -1, err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return 0, -1, err
	}
	var dirp *byte
	if dir != "" {
		if dirp, err = syscall.BytePtrFromString(dir); err != nil {
			return 0, -1, err
		}
	}
	vforkMu.Lock()
	defer vforkMu.Unlock()
	j := &vforkJob
	j.path, j.argv = uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&argvp[0]))
	j.envp, j.dir = uintptr(unsafe.Pointer(&envp[0])), uintptr(unsafe.Pointer(dirp))
	j.nextfd = len(j.fds)
	for i := range j.fds {
		j.fds[i] = -1
		if i < len(files) && files[i] != nil {
			j.fds[i] = int(files[i].Fd())
		}
		j.nextfd = max(j.nextfd, j.fds[i]+1)
	}
	j.pidfd, j.step, j.errno = -1, 0, 0
	top := (uintptr(unsafe.Pointer(&vforkStack[len(vforkStack)-1])) + 1) &^ 15

	// As syscall.StartProcess: no descriptor is made without
	// close-on-exec (and so inherited) while the child is made.
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	runtime.LockOSThread()
	all := ^uint64(0)
	_, _, e := syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&all)), uintptr(unsafe.Pointer(&j.mask)), 8, 0, 0)
	if e != 0 {
		runtime.UnlockOSThread()
		return 0, -1, e
	}
	p, errno := cloneExec(uintptr(unix.CLONE_VM|unix.CLONE_VFORK|unix.CLONE_PIDFD|unix.SIGCHLD), top, uintptr(unsafe.Pointer(&j.pidfd)))
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&j.mask)), 0, 8, 0, 0)
	runtime.UnlockOSThread()
	runtime.KeepAlive(path)
	runtime.KeepAlive(argvp)
	runtime.KeepAlive(envp)
	runtime.KeepAlive(dirp)
	runtime.KeepAlive(files)
	switch {
	case errno != 0:
		return 0, -1, syscall.Errno(errno)
	case j.errno != 0:
		// The child exited (127); the reaper collects it.
		if j.pidfd >= 0 {
			unix.Close(int(j.pidfd))
		}
		return 0, -1, &os.PathError{Op: vforkSteps[min(j.step, uintptr(len(vforkSteps)-1))], Path: prog, Err: syscall.Errno(j.errno)}
	}
	return int(p), int(j.pidfd), nil
}

// vforkSteps name execChild's steps, for its errors.
var vforkSteps = []string{"fork/exec", "setsid", "dup3", "fcntl", "chdir", "sigprocmask", "fork/exec"}

// execChild is the child of cloneExec: see above. It returns only when a
// step failed, which it notes in vforkJob; cloneExec's assembly then exits.
//
//go:nosplit
//go:norace
//go:nocheckptr
func execChild() {
	j := &vforkJob
	if e := vforkCall(unix.SYS_SETSID, 0, 0, 0); e != 0 {
		j.step, j.errno = 1, e
		return
	}
	// As syscall's child does: first every descriptor that the next pass
	// would overwrite before using it moves up, then each goes into place
	// (dup3 to it clears close-on-exec; one already there is cleared).
	next := j.nextfd
	for i := 0; i < len(j.fds); i++ {
		if j.fds[i] >= 0 && j.fds[i] < i {
			if e := vforkCall(unix.SYS_DUP3, uintptr(j.fds[i]), uintptr(next), unix.O_CLOEXEC); e != 0 {
				j.step, j.errno = 2, e
				return
			}
			j.fds[i] = next
			next++
		}
	}
	for i := 0; i < len(j.fds); i++ {
		fd := j.fds[i]
		switch {
		case fd < 0:
			vforkCall(unix.SYS_CLOSE, uintptr(i), 0, 0)
		case fd == i:
			if e := vforkCall(unix.SYS_FCNTL, uintptr(i), unix.F_SETFD, 0); e != 0 {
				j.step, j.errno = 3, e
				return
			}
		default:
			if e := vforkCall(unix.SYS_DUP3, uintptr(fd), uintptr(i), 0); e != 0 {
				j.step, j.errno = 2, e
				return
			}
		}
	}
	if j.dir != 0 {
		if e := vforkCall(unix.SYS_CHDIR, j.dir, 0, 0); e != 0 {
			j.step, j.errno = 4, e
			return
		}
	}
	if _, _, e := syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&j.mask)), 0, 8, 0, 0); e != 0 {
		j.step, j.errno = 5, uintptr(e)
		return
	}
	e := vforkCall(unix.SYS_EXECVE, j.path, j.argv, j.envp)
	j.step, j.errno = 6, e
}

// vforkCall makes a raw system call and returns its errno.
//
//go:nosplit
//go:norace
func vforkCall(trap, a1, a2, a3 uintptr) uintptr {
	_, _, errno := syscall.RawSyscall(trap, a1, a2, a3)
	return uintptr(errno)
}

// execChild is called from cloneExec's assembly only.
var _ = execChild
