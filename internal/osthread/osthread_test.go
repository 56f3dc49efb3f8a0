package osthread

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A thread that leaves the process's mount namespace must never be the
// main thread, whose view /proc/self shows: after many such runs the
// process's mount namespace, seen through /proc/self, is unchanged.
func TestMainThreadKeepsItsNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to unshare a mount namespace")
	}
	before, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		onMain := false
		err := Discard(func() error {
			onMain = unix.Gettid() == unix.Getpid()
			return unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS)
		})
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if onMain {
			t.Fatalf("run %d ran on the main thread", i)
		}
	}
	after, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("/proc/self/ns/mnt is %s after the runs, was %s", after, before)
	}
}
