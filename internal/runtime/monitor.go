package runtime

import (
	"os"
	"os/exec"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// pollerMonitor is go-runc's process monitor for the daemon's runtime
// commands: it waits for a command's exit in the Go runtime's poller (a
// pidfd) and only then reaps it, where go-runc's default monitor blocks
// a goroutine in waitid(2) for the command's whole life.
//
// Why: a goroutine blocked in a system call keeps its P in the syscall
// state, and while one is, the runtime's monitor thread (sysmon) does
// not sleep deeply: it wakes every 20 us, then at doubling intervals,
// until the call has lasted 10 ms and it takes the P back, some 60
// wake-ups (a nanosleep and two context switches each) per runtime
// command. `runsc run` and `crun run` are on a cold start's way, and on
// this 2-CPU PVM guest, where a wake-up is dear, those wake-ups ran beside
// the runtime's own start (bench/results/gvisor.txt, fifteenth session,
// host side). A pidfd in the poller parks the goroutine instead; when the
// daemon has nothing else to do sysmon sleeps until woken.
type pollerMonitor struct{}

func init() {
	runc.Monitor = pollerMonitor{}
}

// defaultMonitor is go-runc's own, for StartLocked (a command that must
// be started from a locked thread, for Pdeathsig: not the daemon's).
var defaultMonitor = runc.Monitor

func (pollerMonitor) Start(c *exec.Cmd) (chan runc.Exit, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	ec := make(chan runc.Exit, 1)
	go func() {
		waitExitInPoller(c.Process.Pid)
		status := 0
		if err := c.Wait(); err != nil {
			status = 255
			if exitErr, ok := err.(*exec.ExitError); ok {
				if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok {
					status = ws.ExitStatus()
				}
			}
		}
		ec <- runc.Exit{Timestamp: time.Now(), Pid: c.Process.Pid, Status: status}
		close(ec)
	}()
	return ec, nil
}

func (pollerMonitor) StartLocked(c *exec.Cmd) (chan runc.Exit, error) {
	return defaultMonitor.StartLocked(c)
}

func (pollerMonitor) Wait(_ *exec.Cmd, ec chan runc.Exit) (int, error) {
	e := <-ec
	return e.Status, nil
}

// waitExitInPoller returns once the child pid has exited, without reaping
// it: its parent has not waited for it, so the PID still names it. If no
// pidfd can be had, it returns at once (the caller's wait then blocks as
// go-runc's own did).
func waitExitInPoller(pid int) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			// An error other than EINTR: stop waiting here; the reap
			// waits instead.
			return err != nil || n > 0
		}
	})
}
