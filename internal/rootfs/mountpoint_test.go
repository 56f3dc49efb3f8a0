package rootfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestIsMountPoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	dir := t.TempDir()
	plain, tmpfs, bind := filepath.Join(dir, "plain"), filepath.Join(dir, "tmpfs"), filepath.Join(dir, "bind")
	for _, d := range []string{plain, tmpfs, bind} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	defer Unmount(tmpfs)
	// A bind mount of the same filesystem has the same device as its
	// parent: only the mount table (or statx) can tell.
	if err := unix.Mount(plain, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer Unmount(bind)
	for path, want := range map[string]bool{plain: false, tmpfs: true, bind: true} {
		got, err := IsMountPoint(path)
		if err != nil || got != want {
			t.Errorf("IsMountPoint(%s) = %v, %v; want %v", filepath.Base(path), got, err, want)
		}
	}
	if _, err := IsMountPoint(filepath.Join(dir, "missing")); err == nil {
		t.Error("IsMountPoint of a missing path: no error")
	}
}
