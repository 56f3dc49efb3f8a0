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
