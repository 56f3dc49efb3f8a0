package rename

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testKeeper is a keeper started by a test, with the daemon's ends of
// its pipes and the agent's end of its FIFO.
type testKeeper struct {
	*keeper
	name   *os.File // the keeper's stdin
	answer *bufio.Reader
	tell   *bufio.Reader
}

// startTestKeeper forks a keeper in a UTS namespace of its own (the host's
// hostname stays as it is) that writes the files in dir, and returns it
// with a descriptor of its UTS namespace.
func startTestKeeper(t *testing.T, dir string) (*testKeeper, *os.File) {
	t.Helper()
	return startTestKeeperWith(t, dir, func() {})
}

// startTestKeeperWith is startTestKeeper that calls prepare once the
// files are written, before the keeper starts (which opens them).
func startTestKeeperWith(t *testing.T, dir string, prepare func()) (*testKeeper, *os.File) {
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
	prepare()
	inR, inW := testPipe(t)
	outR, outW := testPipe(t)
	tellR, tellW := testPipe(t)
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
		k, err := startKeeper(paths, keeperIO{in: int(inR.Fd()), out: int(outW.Fd()), tell: int(tellW.Fd())})
		ch <- started{k, err}
	}()
	s := <-ch
	if s.err != nil {
		t.Fatal(s.err)
	}
	// The keeper has its own copies; the test keeps the other ends.
	inR.Close()
	outW.Close()
	tellW.Close()
	tk := &testKeeper{keeper: s.k, name: inW, answer: bufio.NewReader(outR), tell: bufio.NewReader(tellR)}
	t.Cleanup(func() { tk.release() })
	uts, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", s.k.pid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uts.Close() })
	return tk, uts
}

func testPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// nameAs sends the keeper name and returns its answers to the daemon and
// to the agent.
func (k *testKeeper) nameAs(t *testing.T, name string) (answer, tell string) {
	t.Helper()
	if _, err := k.name.WriteString(name + "\n"); err != nil {
		t.Fatal(err)
	}
	answer, err := k.answer.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the keeper's answer: %v", err)
	}
	tell, err = k.tell.ReadString('\n')
	if err != nil {
		t.Fatalf("reading what the keeper told the agent: %v", err)
	}
	return strings.TrimSuffix(answer, "\n"), strings.TrimSuffix(tell, "\n")
}

// release closes the keeper's stdin, as the daemon does after the take,
// and returns the keeper's exit status once it exited.
func (k *testKeeper) release() int {
	k.name.Close()
	return k.wait()
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
	if answer, tell := k.nameAs(t, "demo-7"); answer != "ok" || tell != TellOK {
		t.Fatalf("the keeper answered %q and told the agent %q, want ok and %q", answer, tell, TellOK)
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
	if code := k.release(); code != 0 {
		t.Errorf("the keeper exited with %d, want 0", code)
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("the keeper after its release: %v, want gone", err)
	}
}

// A file the keeper cannot write (a link) fails the naming with its
// errno, and the keeper still drops its capabilities.
func TestKeeperFailsOnALinkAndStillDropsCapabilities(t *testing.T) {
	dir := t.TempDir()
	k, _ := startTestKeeperWith(t, dir, func() {
		hosts := filepath.Join(dir, "hosts")
		os.Remove(hosts)
		if err := os.Symlink(filepath.Join(dir, "hostname"), hosts); err != nil {
			t.Fatal(err)
		}
	})
	answer, tell := k.nameAs(t, "demo-8")
	if want := fmt.Sprintf("error: writing %s: errno %d", etcHosts, unix.ELOOP); answer != want || tell != TellError {
		t.Errorf("naming through a link: answered %q and told the agent %q, want %q and %q", answer, tell, want, TellError)
	}
	if got := capabilities(t, k.pid); len(got) != 2 || got[0] != "CapPrm: 0000000000000000" {
		t.Errorf("the keeper's capabilities after it failed: %q", got)
	}
}

// A keeper released before any name writes nothing, tells the agent it
// is gone, and exits.
func TestKeeperReleasedBeforeANameWritesNothing(t *testing.T) {
	dir := t.TempDir()
	k, _ := startTestKeeper(t, dir)
	pid := k.pid
	if code := k.release(); code != 1 {
		t.Errorf("the keeper exited with %d, want 1", code)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hostname")); string(b) != "a much longer placeholder content\n" {
		t.Errorf("hostname file written: %q", b)
	}
	if tell, _ := k.tell.ReadString('\n'); tell != TellGone+"\n" {
		t.Errorf("the keeper told the agent %q, want %q", tell, TellGone)
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("the keeper after its release: %v, want gone", err)
	}
}

// The keeper holds none of the namer's descriptors but its pipes, the
// agent's FIFO, and the two files it opened to rewrite at the take.
func TestKeeperHoldsOnlyItsDescriptors(t *testing.T) {
	dir := t.TempDir()
	// Descriptors the keeper must close, below and between its own.
	for i := 0; i < 3; i++ {
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	k, _ := startTestKeeper(t, dir)
	var want []string
	for _, fd := range []int{keeperJob.in, keeperJob.out, keeperJob.tell, keeperJob.done} {
		want = append(want, fmt.Sprint(fd))
	}
	want = append(want, filepath.Join(dir, "hostname"), filepath.Join(dir, "hosts"))
	slices.Sort(want)
	// The keeper closes them and opens the files first thing, but may not
	// have run yet. A file is told by its path, a pipe by its number.
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", k.pid))
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, e := range entries {
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", k.pid, e.Name()))
			if !strings.HasPrefix(target, "/") {
				target = e.Name()
			}
			got = append(got, target)
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
	}
	t.Errorf("the keeper holds descriptors %v, want %v", got, want)
}
