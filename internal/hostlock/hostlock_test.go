package hostlock

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

func TestAcquireAndRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := Holder(path); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("holder %q, want this process", got)
	}
	// flock belongs to an open file: a second open, even in this process,
	// is refused.
	if _, err := Acquire(path); !errors.Is(err, ErrHeld) {
		t.Errorf("a held lock: %v, want ErrHeld", err)
	}
	if RemoveStale(path) {
		t.Error("RemoveStale removed a held lock's file")
	}
	l.Release()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file after Release: %v", err)
	}
	l, err = Acquire(path)
	if err != nil {
		t.Fatalf("taking it again: %v", err)
	}
	l.Release()
}

func TestRemoveStaleIn(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"a.lock", "b.lock", "other"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	held, err := Acquire(filepath.Join(dir, "held.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	if n := RemoveStaleIn(dir, "*.lock"); n != 2 {
		t.Errorf("removed %d, want 2", n)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if len(left) != 2 || left[0] != "held.lock" || left[1] != "other" {
		t.Errorf("left %q, want held.lock and other", left)
	}
}

// TestOneHolderWhileFilesComeAndGo: holders that release (removing the
// file) and a sweeper that removes stale files, all at once on one name,
// never let two hold it. Without Acquire's check that the file it locked
// is still at the path, a taker that opened the file before its removal
// would hold a lock beside the next one's.
func TestOneHolderWhileFilesComeAndGo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	var holders, taken, overlaps atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for taken.Load() < 200 {
				l, err := Acquire(path)
				if errors.Is(err, ErrHeld) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if holders.Add(1) != 1 {
					overlaps.Add(1)
				}
				taken.Add(1)
				runtime.Gosched() // a moment inside
				holders.Add(-1)
				l.Release()
			}
		}()
	}
	var sweeper sync.WaitGroup
	sweeper.Add(1)
	go func() {
		defer sweeper.Done()
		for {
			select {
			case <-stop:
				return
			default:
				RemoveStale(path)
			}
		}
	}()
	wg.Wait()
	close(stop)
	sweeper.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("two holders at once %d times in %d takes", n, taken.Load())
	}
}
