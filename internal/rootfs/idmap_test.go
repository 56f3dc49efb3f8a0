package rootfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

const testBase = 3_000_000

// inUserNS runs script with sh as root of a new user namespace mapping
// 0-65535 to r (the way a sandbox's processes are).
func inUserNS(t *testing.T, r IDRange, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.Base), Size: IDRangeSize}}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER, UidMappings: m, GidMappings: m,
		Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func owner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

// TestIDMappedOverlay: with an ID range, the image's root-owned files are
// the range root's inside (it can write over them), what it writes lands
// in the upper layer owned by the range, and the layer on disk is
// unchanged; without the range the same process cannot write.
func TestIDMappedOverlay(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts an overlay")
	}
	r := IDRange{Base: testBase}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // the range must reach it
	layer := filepath.Join(dir, "layer")
	os.MkdirAll(filepath.Join(layer, "etc"), 0o755)
	os.WriteFile(filepath.Join(layer, "etc", "conf"), []byte("image\n"), 0o644)
	ov := Overlay{Layers: []string{layer}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"),
		Target: filepath.Join(dir, "root"), IDs: &r}
	if err := ov.Mount(); err != nil {
		t.Fatal(err)
	}
	defer ov.Unmount()
	if err := ov.Mount(); err != nil { // a restarted daemon mounts again
		t.Fatalf("mounting again: %v", err)
	}
	if uid, gid := owner(t, filepath.Join(ov.Target, "etc", "conf")); uid != testBase || gid != testBase {
		t.Errorf("image file owned by %d:%d through the overlay, want %d", uid, gid, testBase)
	}
	if uid, _ := owner(t, ov.Target); uid != testBase {
		t.Errorf("/ owned by %d, want %d", uid, testBase)
	}
	out, err := inUserNS(t, r, "set -e; cd "+ov.Target+"; echo mine >> etc/conf; echo new > new; "+
		"touch user; chown 1000:1000 user; mkdir -p tmp/x")
	if err != nil {
		t.Fatalf("writing as the range's root: %v: %s", err, out)
	}
	for name, want := range map[string]uint32{"etc/conf": testBase, "new": testBase, "user": testBase + 1000} {
		if uid, gid := owner(t, filepath.Join(ov.Upper, name)); uid != want || gid != want {
			t.Errorf("upper/%s owned by %d:%d, want %d", name, uid, gid, want)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(layer, "etc", "conf")); string(data) != "image\n" {
		t.Errorf("the layer changed: %q", data)
	}
	if uid, _ := owner(t, filepath.Join(layer, "etc", "conf")); uid != 0 {
		t.Errorf("the layer's file is owned by %d now", uid)
	}
	if err := ov.Unmount(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, idmappedDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("idmapped layers left after unmount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(layer, "etc", "conf")); err != nil {
		t.Errorf("the layer lost a file on unmount: %v", err)
	}

	plain := Overlay{Layers: []string{layer}, Upper: filepath.Join(dir, "upper2"), Work: filepath.Join(dir, "work2"),
		Target: filepath.Join(dir, "root2")}
	if err := plain.Mount(); err != nil {
		t.Fatal(err)
	}
	defer plain.Unmount()
	if out, err := inUserNS(t, r, "echo x >> "+plain.Target+"/etc/conf"); err == nil {
		t.Errorf("without the idmap, the range's root wrote the host root's file: %s", out)
	}
}

// TestIDMappedLayersAreReadOnly: even a recursive delete of the sandbox's
// directory that reaches an idmapped layer cannot change the image.
func TestIDMappedLayersAreReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	dir := t.TempDir()
	layer := filepath.Join(dir, "layer")
	os.MkdirAll(layer, 0o755)
	os.WriteFile(filepath.Join(layer, "f"), nil, 0o644)
	box := filepath.Join(dir, "box")
	lowers, err := mountIDMappedLayers(box, []string{layer}, IDRange{Base: testBase}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer UnmountIDMapped(box)
	os.RemoveAll(box)
	if _, err := os.Stat(filepath.Join(layer, "f")); err != nil {
		t.Errorf("RemoveAll through %s deleted the layer's file: %v", lowers[0], err)
	}
}

// TestKernelFactsAboutIDMappedOverlays records what this design rests on,
// as measured on the kernel the tests run on: an overlay whose upper
// layer is idmapped cannot be written (EOVERFLOW), and an overlay mount
// cannot itself be idmapped (EINVAL). If a kernel lifts either, the
// design may be simplified; the test then says so.
func TestKernelFactsAboutIDMappedOverlays(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts")
	}
	r := IDRange{Base: testBase}
	userns, err := r.OpenUserNS()
	if err != nil {
		t.Fatal(err)
	}
	defer userns.Close()
	dir := t.TempDir()
	for _, d := range []string{"lower", "upperdisk/upper", "upperdisk/work", "root"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.Chown(filepath.Join(dir, "upperdisk", "upper"), 0, 0)
	mapped := filepath.Join(dir, "mappedupper")
	if err := mountIDMapped(filepath.Join(dir, "upperdisk"), mapped, userns); err != nil {
		t.Fatal(err)
	}
	defer Unmount(mapped)
	// mountIDMapped makes it read-only; an upper layer needs it writable.
	if err := unix.MountSetattr(-1, mapped, 0, &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	opts := "lowerdir=" + filepath.Join(dir, "lower") + ",upperdir=" + mapped + "/upper,workdir=" + mapped + "/work"
	err = unix.Mount("overlay", root, "overlay", 0, opts)
	if err == nil {
		defer Unmount(root)
		werr := os.WriteFile(filepath.Join(root, "f"), nil, 0o644)
		if werr == nil {
			t.Logf("this kernel writes through an idmapped upper layer")
		} else if !errors.Is(werr, unix.EOVERFLOW) && !errors.Is(werr, unix.EROFS) {
			t.Errorf("writing through an idmapped upper: %v, want EOVERFLOW or EROFS", werr)
		}
	} else {
		t.Logf("mounting an overlay on an idmapped upper: %v", err)
	}

	plain := filepath.Join(dir, "plainroot")
	os.MkdirAll(plain, 0o755)
	os.MkdirAll(filepath.Join(dir, "u2"), 0o755)
	os.MkdirAll(filepath.Join(dir, "w2"), 0o755)
	if err := unix.Mount("overlay", plain, "overlay", 0, "lowerdir="+filepath.Join(dir, "lower")+",upperdir="+
		filepath.Join(dir, "u2")+",workdir="+filepath.Join(dir, "w2")); err != nil {
		t.Fatal(err)
	}
	defer Unmount(plain)
	fd, err := unix.OpenTree(unix.AT_FDCWD, plain, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())})
	if err == nil {
		t.Logf("this kernel idmaps an overlay mount")
	} else if !errors.Is(err, unix.EINVAL) {
		t.Errorf("idmapping an overlay: %v, want EINVAL", err)
	}
}

// nsGetOwnerUID is NS_GET_OWNER_UID (linux/nsfs.h, _IO(0xb7, 0x4)): the
// owner of the user namespace a descriptor names, as seen by the caller.
const nsGetOwnerUID = 0xb704

// TestOpenUserNSIsTheRangeRoots: the namespace a sandbox joins is owned by
// its range's root, not by the host's root who asked for it (the kernel
// charges per-user counts to a namespace's owner, see OpenUserNS); it maps
// the range, and lets processes in it call setgroups, as one the runtime
// made would.
// Both ways of making one are tried: the maker process (usernsclone.go)
// that OpenUserNS uses on amd64, and unshare(1), used elsewhere.
func TestOpenUserNSIsTheRangeRoots(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a namespace owned by another host user")
	}
	t.Run("maker", func(t *testing.T) {
		testUserNSIsTheRangeRoots(t, func(r IDRange) (*os.File, error) {
			f, ok, err := r.openUserNSByClone()
			if !ok {
				t.Skip("no maker process on " + runtime.GOARCH)
			}
			return f, err
		})
	})
	t.Run("unshare", func(t *testing.T) { testUserNSIsTheRangeRoots(t, IDRange.openUserNSByUnshare) })
}

func testUserNSIsTheRangeRoots(t *testing.T, open func(IDRange) (*os.File, error)) {
	r := IDRange{Base: testBase}
	ns, err := open(r)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var uid uint32
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, ns.Fd(), nsGetOwnerUID, uintptr(unsafe.Pointer(&uid))); errno != 0 {
		t.Fatalf("NS_GET_OWNER_UID: %v", errno)
	}
	if uid != r.Base {
		t.Errorf("owner: host UID %d, want the range's root %d", uid, r.Base)
	}
	cmd := exec.Command("nsenter", "--user=/proc/self/fd/3", "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups")
	cmd.ExtraFiles = []*os.File{ns}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	want := fmt.Sprintf("0 %d %d\n0 %d %d\nallow\n", r.Base, IDRangeSize, r.Base, IDRangeSize)
	if got := strings.Join(strings.Fields(string(out)), " "); got != strings.Join(strings.Fields(want), " ") {
		t.Errorf("inside: %q, want %q", out, want)
	}
}

// TestOpenUserNSLeavesNothing: opening namespaces, many at once, leaves no
// process behind (the maker, or unshare's cat, is reaped and gone), no
// child to reap, no descriptor but the namespaces' own, and the process's
// dumpable flag as it was (the maker shares it, usernsclone.go).
func TestOpenUserNSLeavesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: namespaces owned by other host users")
	}
	const workers, each = 8, 5
	base := uint32(testBase + 2*IDRangeSize)
	fdsBefore := openDescriptors(t)
	dumpable, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	nss := make([]*os.File, workers*each)
	errs := make([]error, len(nss))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				k := w*each + i
				nss[k], errs[k] = IDRange{Base: base + uint32(k)*IDRangeSize}.OpenUserNS()
			}
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Fatalf("namespace %d: %v", k, err)
		}
	}
	if got := openDescriptors(t); got != fdsBefore+len(nss) {
		t.Errorf("%d descriptors open, want %d before and %d namespaces", got, fdsBefore, len(nss))
	}
	for _, ns := range nss {
		ns.Close()
	}
	if now, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0); now != dumpable {
		t.Errorf("dumpable %d after, %d before", now, dumpable)
	}
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil); err != unix.ECHILD {
		t.Errorf("wait for any child: pid %d, %v; want ECHILD (none left)", pid, err)
	}
	for _, uid := range processUIDs(t) {
		if uid >= base && uid < base+uint32(len(nss))*IDRangeSize {
			t.Errorf("a process of host UID %d is left", uid)
		}
	}
}

func openDescriptors(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // ReadDir's own
}

// processUIDs is every host process's real UID.
func processUIDs(t *testing.T) []uint32 {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/status")
	if err != nil {
		t.Fatal(err)
	}
	var uids []uint32
	for _, path := range dirs {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // gone meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					if n, err := strconv.ParseUint(f[0], 10, 32); err == nil {
						uids = append(uids, uint32(n))
					}
				}
			}
		}
	}
	return uids
}
