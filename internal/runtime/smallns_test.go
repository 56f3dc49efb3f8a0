package runtime

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

func TestMountPointsBelow(t *testing.T) {
	mountinfo := `22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:5 / /var/lib/sbd rw - tmpfs t rw
31 22 0:6 / /var/lib/sbd/sandboxes/a/rootfs rw - overlay o rw
32 31 0:7 / /var/lib/sbd/sandboxes/a/rootfs/mnt rw - tmpfs t rw
33 22 0:8 / /run/sbd/netns/a rw - nsfs nsfs rw
34 22 0:8 / /run/sbd/netns/a rw - nsfs nsfs rw
35 22 0:9 / /run/sbd\040x/y rw - tmpfs t rw
36 22 0:10 / /run/sbdx rw - tmpfs t rw
`
	got := mountPointsBelow(mountinfo, []string{"/var/lib/sbd", "/run/sbd x", "/run/sbd/"})
	want := []string{"/run/sbd x/y", "/run/sbd/netns/a", "/var/lib/sbd/sandboxes/a/rootfs", "/var/lib/sbd/sandboxes/a/rootfs/mnt"}
	if !slices.Equal(got, want) {
		t.Errorf("mountPointsBelow = %q, want %q (the directories' own mounts and neighbours left out, parents first)", got, want)
	}
}

// TestSmallNamespace makes a runtime namespace for a state directory that
// already holds a mount (as a restarted daemon's does), then mounts two
// more there, and runs a process in a copy: it sees the mount its paths
// named and its host path outside the directory, with their files, and
// neither of the others; the host's namespace keeps all three, although
// they were shared mounts that an unmount in a peer would have reached.
func TestSmallNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes mount namespaces")
	}
	dir := t.TempDir()
	state, outside := filepath.Join(dir, "state"), filepath.Join(dir, "outside")
	mountTmpfs := func(path, marker string) {
		t.Helper()
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("cs", path, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
		if err := unix.Mount("", path, "", unix.MS_SHARED, ""); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(path, "marker"), []byte(marker), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mountTmpfs(filepath.Join(state, "old"), "old")
	n, err := newSmallNS([]string{state})
	if err != nil {
		t.Fatal(err)
	}
	defer n.ns.Close()
	named, other := filepath.Join(state, "sandboxes", "a", "rootfs"), filepath.Join(state, "other")
	mountTmpfs(named, "named")
	mountTmpfs(other, "other")
	mountTmpfs(outside, "outside")

	var mounts, files string
	self, err := os.Open("/proc/self/ns/user")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	nsPath := fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), self.Fd())
	var nsOpened error
	err = n.run([]string{filepath.Join(named, "marker"), outside, nsPath}, func() error {
		// As crun opens a user namespace the daemon holds.
		if f, err := os.Open(nsPath); err != nil {
			nsOpened = err
		} else {
			f.Close()
		}
		data, err := os.ReadFile("/proc/thread-self/mountinfo")
		mounts = string(data)
		if err != nil {
			return err
		}
		// What crun reads: a child started here inherits the namespace.
		out, err := exec.Command("sh", "-c", "cat "+filepath.Join(named, "marker")+" "+filepath.Join(outside, "marker")+"; echo; find "+filepath.Join(state, "old")+" "+other+" -mindepth 1").CombinedOutput()
		files = string(out)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if nsOpened != nil {
		t.Errorf("a namespace the daemon holds (%s) does not open in the copy: %v", nsPath, nsOpened)
	}
	if files != "namedoutside\n" {
		t.Errorf("the process in the copy read %q, want the named mount's and the outside one's markers and empty directories", files)
	}
	for _, p := range []string{filepath.Join(state, "old"), other} {
		if strings.Contains(mounts, " "+p+" ") {
			t.Errorf("%s is mounted in the copy:\n%s", p, mounts)
		}
	}
	host, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(state, "old"), named, other, outside} {
		if !strings.Contains(string(host), " "+p+" ") {
			t.Errorf("%s is no longer mounted in the host's namespace", p)
		}
	}
}

// TestSmallNamespaceIsMadeAgainAndFallsBack: a create after the small
// namespace's life has a new one made (and the old one stays open for
// creates that took it), and a create whose paths cannot be cloned runs
// in the daemon's namespace instead of failing.
func TestSmallNamespaceIsMadeAgainAndFallsBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes mount namespaces")
	}
	state := t.TempDir()
	n, err := newSmallNS([]string{state})
	if err != nil {
		t.Fatal(err)
	}
	n.log = slog.New(slog.DiscardHandler)
	n.made = time.Now().Add(-2 * smallNSLife)
	r := &Runtime{Name: "crun", rc: &runc.Runc{Root: state}}
	r.small.Store(n)
	ran := 0
	if err := r.inSmallNS(state, []string{state}, func() error { ran++; return nil }); err != nil || ran != 1 {
		t.Fatalf("create in the small namespace: ran %d times, %v", ran, err)
	}
	for deadline := time.Now().Add(10 * time.Second); r.small.Load() == n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no new small namespace after its life")
		}
	}
	if _, err := unix.FcntlInt(n.ns.Fd(), unix.F_GETFD, 0); err != nil {
		t.Errorf("the replaced namespace was closed at once: %v", err)
	}
	gone := filepath.Join(state, "gone", "rootfs")
	if err := r.inSmallNS(state, []string{gone}, func() error { ran++; return nil }); err != nil || ran != 2 {
		t.Fatalf("a create whose root does not resolve ran %d times (want once more, in the daemon's namespace), %v", ran, err)
	}
	if !r.smallFailed.Load() {
		t.Error("the fall back to the daemon's namespace was not noted")
	}
}

// TestSmallNamespaceClonesTopmostMounts: the mounts cloned into a copy
// for a create are, below the state directory, the topmost mount point
// of each path (a path below one already found is not looked up again,
// nor is a name inside the mount found), and outside it the path itself.
func TestSmallNamespaceClonesTopmostMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes mount namespaces")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	for _, m := range []string{"a", "a/b/c", "d"} {
		path := filepath.Join(state, m)
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("cs", path, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(path, unix.MNT_DETACH) })
	}
	os.MkdirAll(filepath.Join(state, "a", "b", "c", "e"), 0o755)
	os.MkdirAll(filepath.Join(state, "plain"), 0o755)
	os.WriteFile(filepath.Join(state, "plain", "file"), nil, 0o644)
	os.WriteFile(filepath.Join(state, "a", "b", "c", "e", "f"), nil, 0o644)
	os.WriteFile(filepath.Join(state, "a", "g"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "outside"), nil, 0o644)
	n, err := newSmallNS([]string{filepath.Join(dir, "run"), state})
	if err != nil {
		t.Fatal(err)
	}
	defer n.ns.Close()
	trees, err := n.cloneTrees([]string{
		filepath.Join(state, "a", "b", "c", "e", "f"), // below two mounts: the topmost, a
		filepath.Join(state, "a", "g"),                // below a, found already
		filepath.Join(state, "plain", "file"),         // on the state directory's own mount
		filepath.Join(state, "d"),                     // a mount point itself
		filepath.Join(dir, "outside"),                 // outside: the path itself
	})
	var at []string
	for _, tr := range trees {
		at = append(at, tr.at)
		unix.Close(tr.fd)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "outside"), filepath.Join(state, "a"), filepath.Join(state, "d")}
	if !slices.Equal(at, want) {
		t.Errorf("cloned %q, want %q", at, want)
	}
}
