// Package osthread runs a function on an OS thread that is thrown away
// after it, for work that changes a thread's namespaces or filesystem
// attributes (setns, unshare, chdir) and must never leak them to other
// goroutines; and (Hold, StartLasting) a child with a parent-death signal
// from a thread that outlives the child.
package osthread

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// Discard runs fn on an OS thread of its own, locked and never unlocked,
// so the thread exits with fn's goroutine and whatever fn changed of it
// (its namespaces, its working directory) reaches no other goroutine.
//
// Never on the process's main thread: Go cannot end that thread and parks
// it for good instead, and /proc/self is the main thread's view, so every
// later read of /proc/self/mountinfo or /proc/self/ns/* (recovery, the
// image store's check of layers in use, cgroup detection) would read the
// namespace fn left it in. A goroutine started while this one holds the
// main thread runs on another.
func Discard(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			done <- Discard(fn)
			runtime.UnlockOSThread()
			return
		}
		done <- fn()
	}()
	return <-done
}
