package rename

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// startTestKeeper forks a keeper in a UTS namespace of its own (the host's
// hostname stays as it is) that writes the files in dir, and returns it
// with a descriptor of its UTS namespace.
func startTestKeeper(t *testing.T, dir string) (*keeper, *os.File) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the keeper sets a hostname, in a UTS namespace of its own")
	}
	paths := [2]string{filepath.Join(dir, "hostname"), filepath.Join(dir, "hosts")}
	for _, p := range paths {
		if err := os.WriteFile(p, []byte("a much longer placeholder content\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	type started struct {
		k   *keeper
		err error
	}
	ch := make(chan started)
	go func() {
		// Never unlocked: the thread, moved to a namespace of its own,
		// ends with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			ch <- started{err: err}
			return
		}
		k, err := startKeeper(paths)
		ch <- started{k, err}
	}()
	s := <-ch
	if s.err != nil {
		t.Fatal(s.err)
	}
	t.Cleanup(s.k.release)
	uts, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", s.k.pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uts.Close() })
	return s.k, uts
}

// hostnameIn returns the hostname of the UTS namespace uts.
func hostnameIn(t *testing.T, uts *os.File) string {
	t.Helper()
	ch := make(chan string)
	go func() {
		runtime.LockOSThread() // never unlocked, as above
		var u unix.Utsname
		if err := unix.Setns(int(uts.Fd()), unix.CLONE_NEWUTS); err != nil {
			ch <- "setns: " + err.Error()
			return
		}
		unix.Uname(&u)
		ch <- unix.ByteSliceToString(u.Nodename[:])
	}()
	return <-ch
}

// capabilities returns the keeper's permitted and effective sets.
func capabilities(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var sets []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "CapPrm:") || strings.HasPrefix(line, "CapEff:") {
			sets = append(sets, strings.Join(strings.Fields(line), " "))
		}
	}
	return sets
}

// The keeper sets the hostname, writes both files, drops its capabilities
// before it answers, and exits when released.
func TestKeeperNamesAndThenHoldsNoCapability(t *testing.T) {
	dir := t.TempDir()
	k, uts := startTestKeeper(t, dir)
	if err := k.name("demo-7"); err != nil {
		t.Fatal(err)
	}
	if got := hostnameIn(t, uts); got != "demo-7" {
		t.Errorf("hostname %q, want demo-7", got)
	}
	host, _ := os.Hostname()
	if host == "demo-7" {
		t.Errorf("the host's hostname changed")
	}
	want := map[string]string{"hostname": "demo-7\n", "hosts": hostsHead + "demo-7\n"}
	for file, content := range want {
		if b, _ := os.ReadFile(filepath.Join(dir, file)); string(b) != content {
			t.Errorf("%s: %q, want %q", file, b, content)
		}
	}
	if got := capabilities(t, k.pid); len(got) != 2 || got[0] != "CapPrm: 0000000000000000" || got[1] != "CapEff: 0000000000000000" {
		t.Errorf("the keeper's capabilities after it answered: %q", got)
	}
	pid := k.pid
	k.release()
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("the keeper after its release: %v, want gone", err)
	}
}

// A file the keeper cannot write (a link) fails the naming with its
// errno, and the keeper still drops its capabilities.
func TestKeeperFailsOnALinkAndStillDropsCapabilities(t *testing.T) {
	dir := t.TempDir()
	k, _ := startTestKeeper(t, dir)
	hosts := filepath.Join(dir, "hosts")
	os.Remove(hosts)
	if err := os.Symlink(filepath.Join(dir, "hostname"), hosts); err != nil {
		t.Fatal(err)
	}
	err := k.name("demo-8")
	if !errors.Is(err, unix.ELOOP) || !strings.Contains(err.Error(), etcHosts) {
		t.Errorf("naming through a link: %v, want ELOOP writing %s", err, etcHosts)
	}
	if got := capabilities(t, k.pid); len(got) != 2 || got[0] != "CapPrm: 0000000000000000" {
		t.Errorf("the keeper's capabilities after it failed: %q", got)
	}
}

// A keeper released before any name writes nothing and exits.
func TestKeeperReleasedBeforeANameWritesNothing(t *testing.T) {
	dir := t.TempDir()
	k, _ := startTestKeeper(t, dir)
	pid := k.pid
	k.release()
	if b, _ := os.ReadFile(filepath.Join(dir, "hostname")); string(b) != "a much longer placeholder content\n" {
		t.Errorf("hostname file written: %q", b)
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("the keeper after its release: %v, want gone", err)
	}
}
