package osthread_test

import (
	"os/exec"
	"syscall"
	"testing"

	"github.com/sandboxd/sandboxd/internal/osthread"
	"github.com/sandboxd/sandboxd/internal/osthread/osthreadtest"
)

// Children with a parent-death signal, each run in Hold, all live to
// their end while other goroutines end the threads they locked (as
// Discard does on every sandbox start). Run without Hold, some are killed:
// 7 to 12 of 48 on a loaded 2-vCPU machine.
func TestHoldKeepsTheChildsThread(t *testing.T) {
	if n := osthreadtest.RunWhileThreadsEnd(t, 48, func() error {
		cmd := exec.Command("sleep", "0.3")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		return osthread.Hold(cmd.Run)
	}); n > 0 {
		t.Errorf("%d of 48 children were killed when a thread ended", n)
	}
}

// Children with a parent-death signal started by StartLasting and waited
// for elsewhere all live to their end while threads end. Started with
// cmd.Start, some are killed: 14 and 13 of 48 in two of three runs on a
// loaded 2-vCPU machine.
func TestStartLastingKeepsTheChildsThread(t *testing.T) {
	if n := osthreadtest.RunWhileThreadsEnd(t, 48, func() error {
		cmd := exec.Command("sleep", "0.3")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := osthread.StartLasting(cmd); err != nil {
			return err
		}
		return cmd.Wait()
	}); n > 0 {
		t.Errorf("%d of 48 children were killed when a thread ended", n)
	}
}
