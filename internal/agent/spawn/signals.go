package spawn

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// A program inherits two things about signals from whoever started it:
// the signals it ignores (execve keeps SIG_IGN, resets only handlers) and
// the signals it blocks. Started under nohup (SIGHUP ignored), as a shell
// script's background job (SIGINT and SIGQUIT ignored) or by a supervisor
// that blocks some, user programs would inherit that through the daemon,
// the runtime and the agent: a shell that ignores SIGHUP outlives its
// terminal's hangup, a blocked SIGTERM makes a kill wait for its SIGKILL.
// So the wrapper resets both before it executes anything, and the agent
// before it starts anything (see ResetSignals).
//
// Which signals can still be ignored in a Go program: the runtime installs
// its own handler for every signal at start, which a child's execve resets
// to the default, except SIGHUP and SIGINT when they were ignored (os/signal
// says so), the job control signals (SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU),
// which it never touches, and signals 32-34 (libc's own; 33 gets the
// runtime's handler without cgo). TestResetSignalsLeavesNoneIgnored starts
// the wrapper with every signal ignored and blocked, so a Go release that
// changes this fails it.
var goLeavesIgnored = []syscall.Signal{
	syscall.SIGHUP, syscall.SIGINT,
	syscall.SIGCONT, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU,
	32, 33, 34,
}

// sigaction is the kernel's struct sigaction (rt_sigaction(2)).
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const (
	sigDFL = 0
	sigIGN = 1
	// sigSetmask is rt_sigprocmask's SIG_SETMASK.
	sigSetmask = 2
	// sigsetSize is the kernel's sigset_t: 64 signals.
	sigsetSize = 8
)

// ResetSignals sets every signal the calling process ignores back to its
// default action and unblocks every signal on the calling thread, which
// the caller locks (runtime.LockOSThread) until it executes a program:
// that program then starts with nothing ignored and nothing blocked.
//
// It reports whether the thread had signals blocked. A Go program's
// children start with the mask the program itself started with, whatever
// its threads block later, so a process that inherited blocked signals
// and starts programs without executing itself first (the agent) must
// execute itself again, from the thread ResetSignals cleared, for its
// children to start with none blocked. (The signals the Go runtime
// unblocks on every thread, SIGHUP, SIGINT, SIGTERM or SIGCHLD among them,
// are not seen here; the runtimes that start the agent pass none of them
// blocked: crun and runsc reset every signal, and runc's init is a Go
// program, which can pass on only what it sees blocked itself.)
func ResetSignals() (hadBlocked bool, err error) {
	for _, sig := range goLeavesIgnored {
		var old sigaction
		if err := rtSigaction(sig, nil, &old); err != nil {
			return false, err
		}
		if old.handler == sigIGN {
			if err := rtSigaction(sig, &sigaction{handler: sigDFL}, nil); err != nil {
				return false, err
			}
		}
	}
	var none, old uint64
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigSetmask,
		uintptr(unsafe.Pointer(&none)), uintptr(unsafe.Pointer(&old)), sigsetSize, 0, 0); errno != 0 {
		return false, fmt.Errorf("spawn: unblocking signals: %w", errno)
	}
	return old != 0, nil
}

// StartWithDefaultSignals makes the calling process, which starts other
// programs, as if it had been started with no signal ignored and none
// blocked (see ResetSignals): the agent calls it first thing in main, and
// tests that play the agent in their TestMain. When it inherited blocked
// signals it executes itself again (same PID, arguments, environment and
// open descriptors), with none blocked; it returns only when it did not,
// with an error if executing failed.
func StartWithDefaultSignals() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hadBlocked, err := ResetSignals()
	if err != nil || !hadBlocked {
		return err
	}
	if err := syscall.Exec("/proc/self/exe", os.Args, os.Environ()); err != nil {
		return fmt.Errorf("spawn: executing itself with no signal blocked: %w", err)
	}
	return nil
}

func rtSigaction(sig syscall.Signal, act, old *sigaction) error {
	if _, _, errno := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig),
		uintptr(unsafe.Pointer(act)), uintptr(unsafe.Pointer(old)), sigsetSize, 0, 0); errno != 0 {
		return fmt.Errorf("spawn: resetting signal %d: %w", sig, errno)
	}
	return nil
}
