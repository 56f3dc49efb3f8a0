package snapshot

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "app-ready", "v1.2_3", "0"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A", "a/b", "..", "a..b", "-a", "a-", ".a", "a b", string(make([]byte, 64))} {
		if err := ValidateName(bad); !errors.Is(err, ErrInvalidName) {
			t.Errorf("%q: %v, want ErrInvalidName", bad, err)
		}
	}
}

// makeUpper writes a small writable layer: files, a directory, a symlink.
func makeUpper(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "work", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "work", "sub", "f"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/f", filepath.Join(dir, "work", "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "var", "lib", "sandboxd-agent"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "var", "lib", "sandboxd-agent", "state.json"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func capture(t *testing.T, s *Store, upper string) Sealed {
	t.Helper()
	ctx := context.Background()
	cp, err := s.CopyLayer(ctx, upper, "var/lib/sandboxd-agent")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := cp.Seal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

// TestLayerIsContentAddressed: equal files give one layer, other files
// another; excluded paths are not copied; a layer goes with its last
// record; leftovers of a crash are removed at Open.
func TestLayerIsContentAddressed(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := capture(t, s, makeUpper(t, "one"))
	b := capture(t, s, makeUpper(t, "one"))
	c := capture(t, s, makeUpper(t, "two"))
	if a.Layer != b.Layer || a.Layer == c.Layer {
		t.Fatalf("layers %s %s %s: want the first two equal, the third different", a.Layer, b.Layer, c.Layer)
	}
	if a.Size != 3 {
		t.Errorf("size %d, want 3", a.Size)
	}
	if _, err := os.Lstat(filepath.Join(s.LayerPath(a.Layer), "var", "lib", "sandboxd-agent")); !os.IsNotExist(err) {
		t.Errorf("the excluded agent state was copied: %v", err)
	}
	if target, err := os.Readlink(filepath.Join(s.LayerPath(a.Layer), "work", "link")); err != nil || target != "sub/f" {
		t.Errorf("symlink: %q, %v", target, err)
	}
	now := time.Now().UTC()
	for _, snap := range []Snapshot{{Name: "x", Layer: a.Layer, CreatedAt: now}, {Name: "y", Layer: a.Layer, CreatedAt: now}, {Name: "z", Layer: c.Layer, CreatedAt: now}} {
		if err := s.Add(snap); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Add(Snapshot{Name: "x", Layer: a.Layer}); !errors.Is(err, ErrExists) {
		t.Errorf("second x: %v, want ErrExists", err)
	}
	if err := s.Remove("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.LayerPath(a.Layer)); err != nil {
		t.Errorf("layer of y removed with x: %v", err)
	}
	if err := s.Remove("y"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.LayerPath(a.Layer)); !os.IsNotExist(err) {
		t.Errorf("layer kept after its last record: %v", err)
	}
	if _, err := s.Get("y"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get removed: %v", err)
	}

	// A crash left a copy in tmp and a layer without a record.
	os.MkdirAll(filepath.Join(s.tmpDir(), "copy-1"), 0o700)
	os.MkdirAll(s.LayerPath("sha256-orphan"), 0o700)
	s2, err := Open(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s2.LayerPath("sha256-orphan")); !os.IsNotExist(err) {
		t.Errorf("orphan layer kept: %v", err)
	}
	if entries, _ := os.ReadDir(s2.tmpDir()); len(entries) != 0 {
		t.Errorf("tmp not emptied: %v", entries)
	}
	if list, err := s2.List(); err != nil || len(list) != 1 || list[0].Name != "z" {
		t.Errorf("list = %+v, %v", list, err)
	}
}

// TestRefreshCatchesUpWithChanges: a copy made before changes, refreshed,
// has the hash of a copy made after them: changed, added, removed,
// replaced and renamed entries, an opaque directory and a whiteout.
func TestRefreshCatchesUpWithChanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: whiteouts are device nodes, opaque directories trusted.* attributes")
	}
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	upper := makeUpper(t, "before")
	os.WriteFile(filepath.Join(upper, "work", "gone"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(upper, "olddir", "inner"), 0o755)
	os.WriteFile(filepath.Join(upper, "olddir", "inner", "f"), []byte("moved"), 0o644)
	since := time.Now().Add(-time.Second)
	cp, err := s.CopyLayer(ctx, upper, "var/lib/sandboxd-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Discard()

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(upper, "work", "sub", "f"), []byte("after!"), 0o600))
	must(os.Remove(filepath.Join(upper, "work", "gone")))
	must(os.WriteFile(filepath.Join(upper, "work", "new"), []byte("new"), 0o644))
	must(os.Remove(filepath.Join(upper, "work", "link")))
	must(os.Mkdir(filepath.Join(upper, "work", "link"), 0o711))
	must(os.Rename(filepath.Join(upper, "olddir"), filepath.Join(upper, "newdir")))
	must(os.Mkdir(filepath.Join(upper, "opaque"), 0o755))
	must(unix.Lsetxattr(filepath.Join(upper, "opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(unix.Mknod(filepath.Join(upper, "whiteout"), unix.S_IFCHR, 0))
	must(os.Chown(filepath.Join(upper, "work", "new"), 1000, 1000))
	must(os.WriteFile(filepath.Join(upper, "var", "lib", "sandboxd-agent", "state.json"), []byte("newer secret"), 0o600))

	n, err := cp.Refresh(ctx, upper, since, "var/lib/sandboxd-agent")
	if err != nil {
		t.Fatal(err)
	}
	got, _, _, err := hashTree(ctx, cp.dir)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := s.CopyLayer(ctx, upper, "var/lib/sandboxd-agent")
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Discard()
	want, _, _, err := hashTree(ctx, fresh.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		out, _ := exec.Command("diff", "-r", "--no-dereference", cp.dir, fresh.dir).CombinedOutput()
		t.Fatalf("refreshed copy (%d entries refreshed) differs from a fresh copy:\n%s", n, out)
	}
	if _, err := os.Lstat(filepath.Join(cp.dir, "var", "lib", "sandboxd-agent")); !os.IsNotExist(err) {
		t.Errorf("the excluded agent state came back: %v", err)
	}
}

// TestMemoryImageFollowsItsRecord: a memory image moves in with its
// snapshot, goes with its removal, and one left without a record (a crash
// between the two) is removed when the store opens.
func TestMemoryImageFollowsItsRecord(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	addMemory := func(name string) {
		t.Helper()
		img, err := st.NewMemoryDir()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(img, "checkpoint.img"), []byte("state"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := st.AddMemory(name, img); err != nil {
			t.Fatal(err)
		}
	}
	layer := filepath.Join(st.layersDir(), "sha256-x")
	if err := os.MkdirAll(layer, 0o700); err != nil {
		t.Fatal(err)
	}
	addMemory("kept")
	if err := st.Add(Snapshot{Name: "kept", Layer: "sha256-x", Memory: true}); err != nil {
		t.Fatal(err)
	}
	addMemory("orphan") // no record: a crash before Add
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(st.MemoryPath("kept"), "checkpoint.img")); err != nil {
		t.Errorf("the image of a recorded snapshot: %v", err)
	}
	if _, err := os.Stat(st.MemoryPath("orphan")); !os.IsNotExist(err) {
		t.Errorf("an image without a record survived Open: %v", err)
	}
	if err := st.Remove("kept"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.MemoryPath("kept")); !os.IsNotExist(err) {
		t.Errorf("the image survived its snapshot's removal: %v", err)
	}
}

// TestOwnTreeKeepsOwnersInTheRange: a layer moved in from another node is
// given to the sandbox's host ID range; an owner outside the 0-based
// range (which a hostile layer may carry, such as another sandbox's host
// IDs) becomes the range's nobody, never a host ID outside the range.
func TestOwnTreeKeepsOwnersInTheRange(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	dir := t.TempDir()
	const base = 3_000_000
	for name, id := range map[string]int{"root": 0, "user": 1000, "stranger": 1_065_536} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o4755); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, id, id); err != nil {
			t.Fatal(err)
		}
		unix.Chmod(p, 0o4755)
	}
	if err := OwnTree(dir, base); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{"root": base, "user": base + 1000, "stranger": base + 65534} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != want || st.Gid != want || fi.Mode()&os.ModeSetuid == 0 {
			t.Errorf("%s: owner %d:%d mode %v, want %d and setuid kept", name, st.Uid, st.Gid, fi.Mode(), want)
		}
	}
}
