package files

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/files/glob"
)

// testFS is an FS rooted at a fresh directory, as the agent's "/" is the
// sandbox's root. host(p) is where sandbox path p is on this machine.
type testFS struct {
	*FS
	dir string
}

func newTestFS(t *testing.T) *testFS {
	t.Helper()
	dir := t.TempDir()
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &testFS{FS: f, dir: dir}
}

func (f *testFS) host(p string) string { return filepath.Join(f.dir, p) }

func (f *testFS) write(t *testing.T, p, content string) {
	t.Helper()
	file, _, err := f.Create(p, CreateOptions{CreateParents: true, UID: -1, GID: -1})
	if err != nil {
		t.Fatalf("Create(%s): %v", p, err)
	}
	if _, err := io.WriteString(file, content); err != nil {
		t.Fatal(err)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}
}

func (f *testFS) read(t *testing.T, p string) (string, error) {
	t.Helper()
	file, _, err := f.OpenRead(p)
	if err != nil {
		return "", err
	}
	defer file.Close()
	data, err := io.ReadAll(file)
	return string(data), err
}

func TestClean(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/a/b/../c", "/a/c"},
		{"/../../etc/shadow", "/etc/shadow"},
		{"//x//", "/x"},
		{"/", "/"},
	} {
		got, err := Clean(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("Clean(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "rel", "/a\x00b", "/" + strings.Repeat("a", MaxPath)} {
		if _, err := Clean(bad); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("Clean(%.20q) = %v, want ErrInvalidPath", bad, err)
		}
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	f := newTestFS(t)
	f.write(t, "/workspace/deep/er/a.txt", "hello")
	got, err := f.read(t, "/workspace/deep/er/a.txt")
	if err != nil || got != "hello" {
		t.Fatalf("read = %q, %v", got, err)
	}
	// Overwrite truncates.
	f.write(t, "/workspace/deep/er/a.txt", "hi")
	if got, _ := f.read(t, "/workspace/deep/er/a.txt"); got != "hi" {
		t.Errorf("after overwrite: %q", got)
	}
	fi, err := os.Stat(f.host("/workspace/deep/er/a.txt"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, %v; want 0644", fi.Mode(), err)
	}
	if fi, _ := os.Stat(f.host("/workspace/deep")); fi.Mode().Perm() != 0o755 {
		t.Errorf("parent mode = %v", fi.Mode())
	}
}

func TestWriteThroughSymlinks(t *testing.T) {
	f := newTestFS(t)
	os.MkdirAll(f.host("/etc"), 0o755)
	os.MkdirAll(f.host("/workspace"), 0o755)
	os.Symlink("/etc/target", f.host("/workspace/abs"))
	os.Symlink("../etc/rel", f.host("/workspace/rel"))
	os.Symlink("/workspace/loop", f.host("/workspace/loop"))
	f.write(t, "/workspace/abs", "A")
	f.write(t, "/workspace/rel", "R")
	if data, _ := os.ReadFile(f.host("/etc/target")); string(data) != "A" {
		t.Errorf("absolute dangling link: target holds %q", data)
	}
	if data, _ := os.ReadFile(f.host("/etc/rel")); string(data) != "R" {
		t.Errorf("relative dangling link: target holds %q", data)
	}
	if _, _, err := f.Create("/workspace/loop", CreateOptions{UID: -1, GID: -1}); !errors.Is(err, unix.ELOOP) {
		t.Errorf("link loop: %v", err)
	}
}

func TestWriteModeAndOwner(t *testing.T) {
	f := newTestFS(t)
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = 1234, 5678
	}
	file, created, err := f.Create("/x", CreateOptions{Perm: 0o750 | fs.ModeSetgid, SetPerm: true, UID: uid, GID: gid})
	if err != nil || !created {
		t.Fatalf("Create: %v created=%v", err, created)
	}
	file.Close()
	var st unix.Stat_t
	if err := unix.Stat(f.host("/x"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o2750 {
		t.Errorf("mode = %o, want 2750", st.Mode&0o7777)
	}
	if uid >= 0 && (st.Uid != 1234 || st.Gid != 5678) {
		t.Errorf("owner = %d:%d", st.Uid, st.Gid)
	}
	// A new file can be given to a user (a session's), with the parents
	// the call makes; an existing one keeps its owner.
	if uid >= 0 {
		file, _, err := f.Create("/home/u/deep/f", CreateOptions{CreateParents: true, UID: -1, GID: -1, Owner: &Owner{1000, 1001}})
		if err != nil {
			t.Fatal(err)
		}
		file.Close()
		for _, p := range []string{"/home/u/deep/f", "/home/u/deep", "/home/u", "/home"} {
			unix.Stat(f.host(p), &st)
			if st.Uid != 1000 || st.Gid != 1001 {
				t.Errorf("%s belongs to %d:%d", p, st.Uid, st.Gid)
			}
		}
		file, _, _ = f.Create("/x", CreateOptions{UID: -1, GID: -1, Owner: &Owner{1000, 1001}, Perm: 0o2750, SetPerm: false})
		file.Close()
		unix.Stat(f.host("/x"), &st)
		if st.Uid == 1000 {
			t.Error("an existing file was given to the session's user")
		}
		if err := f.Mkdir("/owned", 0o700, false, &Owner{1000, 1001}); err != nil {
			t.Fatal(err)
		}
		unix.Stat(f.host("/owned"), &st)
		if st.Uid != 1000 || st.Mode&0o777 != 0o700 {
			t.Errorf("mkdir with an owner: %d %o", st.Uid, st.Mode&0o777)
		}
	}
	// An existing file keeps its mode when none is given.
	file, created, err = f.Create("/x", CreateOptions{UID: -1, GID: -1})
	if err != nil || created {
		t.Fatalf("Create again: %v created=%v", err, created)
	}
	file.Close()
	unix.Stat(f.host("/x"), &st)
	if st.Mode&0o7777 != 0o2750 {
		t.Errorf("mode after rewrite = %o", st.Mode&0o7777)
	}
}

func TestWriteErrors(t *testing.T) {
	f := newTestFS(t)
	f.write(t, "/file", "x")
	os.Mkdir(f.host("/dir"), 0o755)
	unix.Mkfifo(f.host("/fifo"), 0o644)
	cases := []struct {
		p    string
		o    CreateOptions
		want error
	}{
		{"/missing/parent/f", CreateOptions{UID: -1, GID: -1}, unix.ENOENT},
		{"/dir", CreateOptions{UID: -1, GID: -1}, unix.EISDIR},
		{"/file/below", CreateOptions{UID: -1, GID: -1}, unix.ENOTDIR},
		{"/file/below", CreateOptions{CreateParents: true, UID: -1, GID: -1}, unix.ENOTDIR},
		{"/fifo", CreateOptions{UID: -1, GID: -1}, nil}, // ENXIO (no reader) or ErrNotRegular
		{"/" + strings.Repeat("n", 256), CreateOptions{UID: -1, GID: -1}, unix.ENAMETOOLONG},
	}
	for _, c := range cases {
		_, _, err := f.Create(c.p, c.o)
		if err == nil {
			t.Errorf("Create(%.30s) succeeded", c.p)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("Create(%.30s) = %v, want %v", c.p, err, c.want)
		}
	}
	if _, _, err := f.OpenRead("/dir"); !errors.Is(err, unix.EISDIR) {
		t.Errorf("OpenRead(dir) = %v", err)
	}
	if _, _, err := f.OpenRead("/fifo"); !errors.Is(err, ErrNotRegular) {
		t.Errorf("OpenRead(fifo) = %v", err)
	}
	// A 255-byte name is fine.
	f.write(t, "/"+strings.Repeat("n", 255), "ok")
}

// The attacks of the issue, against an FS rooted at a directory: nothing
// may read or write outside it.
func TestPathsStayInsideTheRoot(t *testing.T) {
	f := newTestFS(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host secret"), 0o600)
	os.MkdirAll(f.host("/etc"), 0o755)
	os.WriteFile(f.host("/etc/shadow"), []byte("sandbox shadow"), 0o600)
	os.MkdirAll(f.host("/workspace"), 0o755)
	rel, _ := filepath.Rel(f.host("/workspace"), outside)

	links := map[string]string{
		"/workspace/abs":      outside,                     // absolute: resolves inside the root
		"/workspace/rel":      rel,                         // ../../..: clamped at the root
		"/workspace/proc":     "/proc/1/root" + outside,    // a magic link path
		"/workspace/self":     "/proc/self/root" + outside, // same, via self
		"/workspace/etc":      "/etc",
		"/workspace/dotdot":   "../../../../../../../../etc",
		"/workspace/loop":     "/workspace/loop",
		"/workspace/hostroot": "/proc/self/cwd",
	}
	for name, target := range links {
		os.Symlink(target, f.host(name))
	}
	for _, p := range []string{
		"/../../etc/shadow", "/workspace/../../../etc/shadow", "/workspace/etc/shadow", "/workspace/dotdot/shadow",
	} {
		p, _ = Clean(p)
		got, err := f.read(t, p)
		if err != nil || got != "sandbox shadow" {
			t.Errorf("read %s = %q, %v; want the sandbox's own /etc/shadow", p, got, err)
		}
	}
	for _, p := range []string{"/workspace/abs/secret", "/workspace/rel/secret", "/workspace/proc/secret", "/workspace/self/secret", "/workspace/loop", "/workspace/hostroot/secret"} {
		if got, err := f.read(t, p); err == nil || strings.Contains(got, "host secret") {
			t.Errorf("read %s = %q, %v; want an error", p, got, err)
		}
		if file, _, err := f.Create(p, CreateOptions{UID: -1, GID: -1}); err == nil {
			file.Close()
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Errorf("writes escaped the root: %v", entries)
	}
	if data, _ := os.ReadFile(filepath.Join(outside, "secret")); string(data) != "host secret" {
		t.Errorf("host file changed: %q", data)
	}
}

// Racing a write against a symlink swap: the directory the write goes
// through is replaced, over and over, by a symlink pointing outside the
// root. Every write must land inside the root.
func TestSymlinkSwapDuringWrite(t *testing.T) {
	f := newTestFS(t)
	outside := t.TempDir()
	os.MkdirAll(f.host("/workspace/d"), 0o755)
	rel, _ := filepath.Rel(f.host("/workspace"), outside)
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		d, tmp, link := f.host("/workspace/d"), f.host("/workspace/d.tmp"), f.host("/workspace/l")
		for !stop.Load() {
			os.Remove(link)
			os.Symlink(rel, link)
			os.Rename(d, tmp)
			os.Rename(link, d) // d is now a symlink "outside"
			os.Rename(d, link)
			os.Rename(tmp, d) // d is a directory again
		}
	}()
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		file, _, err := f.Create(fmt.Sprintf("/workspace/d/f%d", i), CreateOptions{UID: -1, GID: -1})
		if err == nil {
			file.WriteString("x")
			file.Close()
		}
		f.Mkdir(fmt.Sprintf("/workspace/d/m%d", i), 0o755, false, nil)
		f.Remove(fmt.Sprintf("/workspace/d/f%d", i-1), false)
	}
	stop.Store(true)
	wg.Wait()
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("%d entries escaped the root, e.g. %s", len(entries), entries[0].Name())
	}
}

func TestProcIsOffLimits(t *testing.T) {
	f, err := Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	os.Symlink("/proc/self", filepath.Join(dir, "self"))
	os.Symlink("/proc/1/root", filepath.Join(dir, "root1"))
	for _, p := range []string{"/proc/self/environ", "/proc/self/mem", "/proc/1/environ", dir + "/self/environ", dir + "/self/mem", "/proc/self/fd/0", dir + "/root1/etc/hostname", "/proc/self/root/etc/hostname"} {
		if file, _, err := f.OpenRead(p); err == nil {
			file.Close()
			t.Errorf("read %s succeeded", p)
		}
		if file, _, err := f.Create(p, CreateOptions{UID: -1, GID: -1}); err == nil {
			file.Close()
			t.Errorf("write %s succeeded", p)
		}
	}
	if _, _, err := f.OpenRead("/proc/self/environ"); !errors.Is(err, ErrForbidden) {
		t.Errorf("read /proc/self/environ = %v, want ErrForbidden", err)
	}
	if _, _, err := f.List("/proc", ListOptions{}); !errors.Is(err, ErrForbidden) {
		t.Errorf("list /proc = %v", err)
	}
}

// The agent's private directory and the mounts below it are off limits,
// however a path reaches them: whether the first call finds them
// (Open does not look) or Learn found them before it.
func TestPrivateDirIsOffLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: bind-mounts a directory to stand for the agent's socket mount")
	}
	for _, learn := range []bool{false, true} {
		t.Run(fmt.Sprintf("learned=%v", learn), func(t *testing.T) { testPrivateDirIsOffLimits(t, learn) })
	}
}

func testPrivateDirIsOffLimits(t *testing.T, learn bool) {
	dir := t.TempDir()
	run := filepath.Join(dir, ".sandboxd", "run")
	os.MkdirAll(run, 0o700)
	os.WriteFile(filepath.Join(dir, ".sandboxd", "agent"), []byte("binary"), 0o755)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "agent.sock"), nil, 0o600)
	if err := unix.Mount(src, run, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(run, unix.MNT_DETACH) })
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if learn {
		f.Learn()
	}
	os.MkdirAll(filepath.Join(dir, "workspace"), 0o755)
	os.Symlink("/.sandboxd/run", filepath.Join(dir, "workspace", "l"))
	for _, p := range []string{"/.sandboxd/run/x", "/workspace/l/x", "/workspace/l/agent.sock"} {
		if file, _, err := f.Create(p, CreateOptions{UID: -1, GID: -1}); !errors.Is(err, ErrForbidden) {
			if file != nil {
				file.Close()
			}
			t.Errorf("write %s = %v, want ErrForbidden", p, err)
		}
	}
	for _, p := range []string{"/.sandboxd", "/.sandboxd/run", "/workspace/l/agent.sock"} {
		if err := f.Remove(p, true); err == nil {
			t.Errorf("delete %s succeeded", p)
		}
	}
	if _, err := f.Move("/.sandboxd", "/elsewhere", false); !errors.Is(err, ErrForbidden) {
		t.Errorf("move /.sandboxd = %v", err)
	}
	if err := f.Rename("/workspace", "/.sandboxd", true); !errors.Is(err, ErrForbidden) {
		t.Errorf("rename over /.sandboxd = %v", err)
	}
	// A dangling symlink whose target is in the private mount.
	os.Symlink("/.sandboxd/run/new", filepath.Join(dir, "workspace", "dangling"))
	if file, _, err := f.Create("/workspace/dangling", CreateOptions{UID: -1, GID: -1}); err == nil {
		file.Close()
		t.Error("write through a dangling link into the private mount succeeded")
	}
	if entries, _ := os.ReadDir(src); len(entries) != 1 || entries[0].Name() != "agent.sock" {
		t.Errorf("the private mount holds %v; a failed write must leave nothing behind", entries)
	}
}

func TestMkdir(t *testing.T) {
	f := newTestFS(t)
	if err := f.Mkdir("/a", 0o700, false, nil); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(f.host("/a")); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", fi.Mode())
	}
	if err := f.Mkdir("/a", 0o755, false, nil); !errors.Is(err, unix.EEXIST) {
		t.Errorf("again: %v", err)
	}
	if err := f.Mkdir("/a", 0o755, true, nil); err != nil {
		t.Errorf("again, recursive: %v", err)
	}
	if err := f.Mkdir("/b/c/d", 0o755, false, nil); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing parent: %v", err)
	}
	if err := f.Mkdir("/b/c/d", 0o755, true, nil); err != nil {
		t.Errorf("recursive: %v", err)
	}
	f.write(t, "/file", "")
	if err := f.Mkdir("/file/x", 0o755, true, nil); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("below a file: %v", err)
	}
}

func TestRemove(t *testing.T) {
	f := newTestFS(t)
	f.write(t, "/d/sub/f", "x")
	f.write(t, "/keep/target", "kept")
	os.Symlink("/keep", f.host("/d/link"))
	if err := f.Remove("/d", false); !errors.Is(err, unix.EISDIR) {
		t.Errorf("dir without recursive: %v", err)
	}
	if err := f.Remove("/d", true); err != nil {
		t.Fatalf("recursive: %v", err)
	}
	if _, err := os.Stat(f.host("/d")); !os.IsNotExist(err) {
		t.Errorf("still there: %v", err)
	}
	if got, _ := f.read(t, "/keep/target"); got != "kept" {
		t.Error("a symlink's target was deleted")
	}
	if err := f.Remove("/missing", false); !errors.Is(err, unix.ENOENT) {
		t.Errorf("missing: %v", err)
	}
	if err := f.Remove("/", true); !errors.Is(err, ErrRoot) {
		t.Errorf("root: %v", err)
	}
	// A link is removed, not followed.
	os.Symlink("/keep", f.host("/l"))
	if err := f.Remove("/l", false); err != nil {
		t.Errorf("symlink: %v", err)
	}
	if _, err := os.Stat(f.host("/keep/target")); err != nil {
		t.Error("target gone")
	}
}

func TestRemoveDoesNotEnterMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: bind-mounts a directory")
	}
	f := newTestFS(t)
	mnt := f.host("/d/mnt")
	os.MkdirAll(mnt, 0o755)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "precious"), []byte("x"), 0o644)
	if err := unix.Mount(src, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := f.Remove("/d", true); !errors.Is(err, unix.EBUSY) {
		t.Errorf("delete across a mount = %v, want EBUSY", err)
	}
	if _, err := os.Stat(filepath.Join(src, "precious")); err != nil {
		t.Error("the mounted directory's content was deleted")
	}
}

func TestRenameAndMove(t *testing.T) {
	f := newTestFS(t)
	f.write(t, "/a", "A")
	f.write(t, "/b", "B")
	if err := f.Rename("/a", "/b", false); !errors.Is(err, unix.EEXIST) {
		t.Errorf("rename onto existing: %v", err)
	}
	if err := f.Rename("/a", "/b", true); err != nil {
		t.Errorf("rename with overwrite: %v", err)
	}
	if got, _ := f.read(t, "/b"); got != "A" {
		t.Errorf("b = %q", got)
	}
	os.Mkdir(f.host("/dir"), 0o755)
	got, err := f.Move("/b", "/dir", false)
	if err != nil || got != "/dir/b" {
		t.Fatalf("move into dir = %q, %v", got, err)
	}
	if got, _ := f.read(t, "/dir/b"); got != "A" {
		t.Errorf("moved content %q", got)
	}
	if _, err := f.Move("/nope", "/x", false); !errors.Is(err, unix.ENOENT) {
		t.Errorf("move missing: %v", err)
	}
	os.MkdirAll(f.host("/full/x"), 0o755)
	os.MkdirAll(f.host("/e"), 0o755)
	if err := f.Rename("/e", "/full", true); !errors.Is(err, unix.EEXIST) {
		t.Errorf("rename onto non-empty dir: %v", err)
	}
}

func TestMoveAcrossFileSystems(t *testing.T) {
	shm := "/dev/shm"
	if fi, err := os.Stat(shm); err != nil || !fi.IsDir() {
		t.Skip("no /dev/shm")
	}
	var a, b unix.Stat_t
	tmp := t.TempDir()
	unix.Stat(tmp, &a)
	unix.Stat(shm, &b)
	if a.Dev == b.Dev {
		t.Skip("the temp dir and /dev/shm are one file system")
	}
	f, err := Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src := filepath.Join(tmp, "f")
	os.WriteFile(src, []byte("payload"), 0o640)
	dst := filepath.Join(shm, fmt.Sprintf("sandboxd-move-test-%d", os.Getpid()))
	defer os.Remove(dst)
	if _, err := f.Move(src, dst, false); err != nil {
		t.Fatalf("move across: %v", err)
	}
	if data, _ := os.ReadFile(dst); string(data) != "payload" {
		t.Errorf("content %q", data)
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	if _, err := os.Stat(src); !os.IsNotExist(err) {
		t.Error("source left behind")
	}
	os.Mkdir(filepath.Join(tmp, "d"), 0o755)
	if _, err := f.Move(filepath.Join(tmp, "d"), dst+"d", false); !errors.Is(err, ErrCrossDevice) {
		t.Errorf("dir across = %v", err)
	}
}

func TestStatAndExists(t *testing.T) {
	f := newTestFS(t)
	f.write(t, "/f", "12345")
	os.Symlink("/f", f.host("/l"))
	os.Symlink("/nowhere", f.host("/dangling"))
	e, err := f.Stat("/f")
	if err != nil || e.Size != 5 || !e.Mode.IsRegular() || !e.Readable || !e.Writable || e.Executable {
		t.Errorf("stat f = %+v, %v", e, err)
	}
	e, err = f.Stat("/l")
	if err != nil || e.Mode&fs.ModeSymlink == 0 || e.Target != "/f" {
		t.Errorf("stat l = %+v, %v", e, err)
	}
	if ok, mode, err := f.Exists("/l"); !ok || !mode.IsRegular() || err != nil {
		t.Errorf("exists l = %v %v %v", ok, mode, err)
	}
	if ok, _, err := f.Exists("/dangling"); ok || err != nil {
		t.Errorf("exists dangling = %v %v", ok, err)
	}
	if ok, _, err := f.Exists("/f/below"); ok || err != nil {
		t.Errorf("exists below a file = %v %v", ok, err)
	}
	if _, err := f.Stat("/missing"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("stat missing = %v", err)
	}
}

func TestList(t *testing.T) {
	f := newTestFS(t)
	for _, p := range []string{"/w/b.txt", "/w/a/z", "/w/a/y", "/w/.hidden/x", "/w/.dot"} {
		f.write(t, p, "x")
	}
	os.Symlink("/w/a", f.host("/w/link"))
	names := func(es []Entry) string {
		var out []string
		for _, e := range es {
			out = append(out, e.Rel)
		}
		return strings.Join(out, " ")
	}
	es, tr, err := f.List("/w", ListOptions{})
	if err != nil || tr || names(es) != "a b.txt link" {
		t.Errorf("flat = %q %v %v", names(es), tr, err)
	}
	es, _, _ = f.List("/w", ListOptions{Recursive: true})
	if names(es) != "a a/y a/z b.txt link" {
		t.Errorf("recursive = %q", names(es))
	}
	es, _, _ = f.List("/w", ListOptions{Recursive: true, Hidden: true})
	if names(es) != ".dot .hidden .hidden/x a a/y a/z b.txt link" {
		t.Errorf("hidden = %q", names(es))
	}
	es, tr, _ = f.List("/w", ListOptions{Recursive: true, Max: 2})
	if !tr || len(es) != 2 {
		t.Errorf("max: %d entries, truncated=%v", len(es), tr)
	}
	if es[0].Path != "/w/a" || es[0].Name != "a" || !es[0].Mode.IsDir() {
		t.Errorf("entry = %+v", es[0])
	}
	if _, _, err := f.List("/w/b.txt", ListOptions{}); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("list a file = %v", err)
	}
	// The symlink to a directory is listed as given: "/w/link" lists /w/a.
	es, _, _ = f.List("/w/link", ListOptions{})
	if names(es) != "y z" {
		t.Errorf("through link = %q", names(es))
	}
}

func TestListManyFiles(t *testing.T) {
	f := newTestFS(t)
	const n = 2000
	os.Mkdir(f.host("/many"), 0o755)
	for i := range n {
		os.WriteFile(f.host(fmt.Sprintf("/many/f%05d", i)), nil, 0o644)
	}
	es, tr, err := f.List("/many", ListOptions{Max: 100_000})
	if err != nil || tr || len(es) != n {
		t.Fatalf("%d entries, %v %v", len(es), tr, err)
	}
	if err := f.Remove("/many", true); err != nil {
		t.Fatal(err)
	}
}

func TestTarRoundTrip(t *testing.T) {
	f := newTestFS(t)
	f.write(t, "/src/a.txt", "alpha")
	f.write(t, "/src/sub/b.bin", "\x00\x01\x02")
	f.write(t, "/src/node_modules/big", "skip me")
	f.write(t, "/src/sub/debug.log", "skip me too")
	os.Symlink("a.txt", f.host("/src/link"))
	os.Link(f.host("/src/a.txt"), f.host("/src/hard"))
	os.Chmod(f.host("/src/sub/b.bin"), 0o751)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(f.host("/src/a.txt"), mtime, mtime)
	if os.Geteuid() == 0 {
		os.Lchown(f.host("/src/sub/b.bin"), 4321, 8765)
	}
	ex, _ := glob.Compile([]string{"node_modules", "*.log"})
	var buf bytes.Buffer
	if err := f.Export(context.Background(), "/src", &buf, ExportOptions{Exclude: ex}); err != nil {
		t.Fatal(err)
	}
	stats, err := f.Import(context.Background(), "/dst/restored", bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if stats.Entries != 5 || stats.Bytes != 8 {
		t.Errorf("stats = %+v", stats)
	}
	if got, _ := f.read(t, "/dst/restored/a.txt"); got != "alpha" {
		t.Errorf("a.txt = %q", got)
	}
	if got, _ := f.read(t, "/dst/restored/sub/b.bin"); got != "\x00\x01\x02" {
		t.Errorf("b.bin = %q", got)
	}
	if target, _ := os.Readlink(f.host("/dst/restored/link")); target != "a.txt" {
		t.Errorf("link = %q", target)
	}
	var a, h unix.Stat_t
	unix.Stat(f.host("/dst/restored/a.txt"), &a)
	unix.Stat(f.host("/dst/restored/hard"), &h)
	if a.Ino != h.Ino {
		t.Error("hard link not restored as a link")
	}
	if time.Unix(a.Mtim.Unix()).UTC() != mtime {
		t.Errorf("mtime = %v", time.Unix(a.Mtim.Unix()))
	}
	var b unix.Stat_t
	unix.Stat(f.host("/dst/restored/sub/b.bin"), &b)
	if b.Mode&0o7777 != 0o751 {
		t.Errorf("mode = %o", b.Mode&0o7777)
	}
	if os.Geteuid() == 0 && (b.Uid != 4321 || b.Gid != 8765) {
		t.Errorf("owner = %d:%d", b.Uid, b.Gid)
	}
	for _, p := range []string{"/dst/restored/node_modules", "/dst/restored/sub/debug.log"} {
		if _, err := os.Lstat(f.host(p)); !os.IsNotExist(err) {
			t.Errorf("%s was not excluded", p)
		}
	}
}

// Hostile archives: nothing may land outside the target directory.
func TestImportStaysInside(t *testing.T) {
	f := newTestFS(t)
	os.MkdirAll(f.host("/etc"), 0o755)
	os.WriteFile(f.host("/etc/passwd"), []byte("root"), 0o644)
	type member struct {
		name, link string
		typ        byte
		body       string
	}
	cases := map[string][]member{
		"dotdot":            {{name: "../../etc/passwd", typ: tar.TypeReg, body: "evil"}},
		"symlink then file": {{name: "esc", link: "/etc", typ: tar.TypeSymlink}, {name: "esc/passwd", typ: tar.TypeReg, body: "evil"}},
		"relative symlink":  {{name: "esc", link: "../../etc", typ: tar.TypeSymlink}, {name: "esc/passwd", typ: tar.TypeReg, body: "evil"}},
		"hard link out":     {{name: "h", link: "../../etc/passwd", typ: tar.TypeLink}},
		"hard link via sym": {{name: "esc", link: "/etc", typ: tar.TypeSymlink}, {name: "h", link: "esc/passwd", typ: tar.TypeLink}},
		"magic link":        {{name: "m", link: "/proc/self/root/etc", typ: tar.TypeSymlink}, {name: "m/passwd", typ: tar.TypeReg, body: "evil"}},
	}
	for name, members := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, m := range members {
				tw.WriteHeader(&tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.typ, Mode: 0o644, Size: int64(len(m.body))})
				tw.Write([]byte(m.body))
			}
			tw.Close()
			dir := "/in/" + strings.ReplaceAll(name, " ", "-")
			_, err := f.Import(context.Background(), dir, &buf)
			if err == nil {
				t.Error("import succeeded")
			}
			if data, _ := os.ReadFile(f.host("/etc/passwd")); string(data) != "root" {
				t.Errorf("/etc/passwd = %q", data)
			}
			var st unix.Stat_t
			unix.Stat(f.host("/etc/passwd"), &st)
			if st.Nlink != 1 {
				t.Errorf("/etc/passwd has %d links", st.Nlink)
			}
		})
	}
}

// TestExportOneFileSystem: with OneFileSystem the export keeps a mount
// point below the directory as an empty directory and leaves out what is
// mounted there (a bucket's objects under a backed-up /workspace); without
// it, it goes in.
func TestExportOneFileSystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	f := newTestFS(t)
	f.write(t, "/w/own.txt", "mine")
	os.MkdirAll(f.host("/w/bucket"), 0o755)
	if err := unix.Mount("tmpfs", f.host("/w/bucket"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(f.host("/w/bucket"), unix.MNT_DETACH) })
	os.WriteFile(f.host("/w/bucket/object"), []byte("theirs"), 0o644)
	members := func(o ExportOptions) string {
		var buf bytes.Buffer
		if err := f.Export(context.Background(), "/w", &buf, o); err != nil {
			t.Fatal(err)
		}
		var names []string
		tr := tar.NewReader(&buf)
		for {
			hdr, err := tr.Next()
			if err != nil {
				break
			}
			names = append(names, hdr.Name)
		}
		return strings.Join(names, " ")
	}
	if got := members(ExportOptions{OneFileSystem: true}); got != "bucket/ own.txt" {
		t.Errorf("one file system: %q, want the mount point and own.txt", got)
	}
	if got := members(ExportOptions{}); got != "bucket/ bucket/object own.txt" {
		t.Errorf("without the option: %q, want the mount's object too", got)
	}
}
