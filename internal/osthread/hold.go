package osthread

import "runtime"

// Hold runs fn with the calling goroutine locked to its OS thread, for fn
// that starts a child with a parent-death signal (SysProcAttr.Pdeathsig)
// and waits for it (exec.Cmd's Run, Output, CombinedOutput).
//
// Why: the kernel sends the parent-death signal when the THREAD that
// forked the child exits, not the process, and Go ends a thread whenever
// a goroutine locked to it ends (Discard does so on every sandbox start).
// Unlocked, the goroutine that forked may go on on another thread while
// the one that forked runs other goroutines, one of which ends it: the
// child is killed at random (TestHoldKeepsTheChildsThread). Locked, that
// thread runs nothing else and outlives the child, so the signal comes
// only when the process itself dies. A child that outlives fn (Start
// without Wait) is started by StartLasting instead.
func Hold(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return fn()
}
