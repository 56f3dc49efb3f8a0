package osthread

import (
	"os/exec"
	"runtime"
	"sync"
)

// lasting is a goroutine locked to its thread for good, so that the
// thread lives as long as the process: StartLasting forks from it.
var lasting struct {
	once sync.Once
	run  chan func()
}

// StartLasting is cmd.Start from a thread that lives as long as the
// process, for a child with a parent-death signal that outlives the call
// (a server a test waits for elsewhere): the signal then comes only when
// the process dies (see Hold for why any other thread would not do). A
// child waited for in the same call needs only Hold.
func StartLasting(cmd *exec.Cmd) error {
	lasting.once.Do(func() {
		lasting.run = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread never ends
			for fn := range lasting.run {
				fn()
			}
		}()
	})
	done := make(chan error, 1)
	lasting.run <- func() { done <- cmd.Start() }
	return <-done
}
