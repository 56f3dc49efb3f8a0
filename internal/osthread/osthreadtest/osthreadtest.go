// Package osthreadtest helps tests show what a child with a parent-death
// signal suffers when the daemon's goroutines end the threads they locked
// (see osthread.Hold). It is for tests only.
package osthreadtest

import (
	"runtime"
	"sync"
	"testing"
)

// RunWhileThreadsEnd runs fn n times at once while other goroutines keep
// locking their threads and ending, which ends the threads (as
// osthread.Discard does on every sandbox start), and fails t with each
// error fn returns. It returns how many calls failed.
func RunWhileThreadsEnd(t testing.TB, n int, fn func() error) int {
	t.Helper()
	stop := endLockedThreads()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- fn()
		}()
	}
	wg.Wait()
	stop()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			t.Error(err)
		}
	}
	return failed
}

// endLockedThreads starts two goroutines that keep starting goroutines
// that lock their thread and end, until the function it returns is
// called; that function waits for them.
func endLockedThreads() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				endEight()
			}
		}()
	}
	return func() {
		close(done)
		wg.Wait()
	}
}

func endEight() {
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
		}()
	}
	wg.Wait()
}
