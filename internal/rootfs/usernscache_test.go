package rootfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// nsInode identifies the namespace f refers to.
func nsInode(t *testing.T, f *os.File) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func waitNS(t *testing.T, p *PendingUserNS) *os.File {
	t.Helper()
	f, err := p.Wait()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestUserNSCache: a range's namespace is opened once and handed out as
// descriptors of the caller's own, which map the range (a layer's
// root-owned file shows as the range root's through a mount idmapped
// with one) and stay valid after the cache is closed; another range gets
// another namespace.
func TestUserNSCache(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: user namespaces with ID maps, idmapped mounts")
	}
	c := NewUserNSCache(2)
	r := IDRange{Base: testBase}
	c.Prefetch(r)
	wait := func(p *PendingUserNS) *os.File { return waitNS(t, p) }
	first, second := c.Open(r), c.Open(r)
	defer first.Close()
	defer second.Close()
	f1, f2 := wait(first), wait(second)
	if f1.Fd() == f2.Fd() || nsInode(t, f1) != nsInode(t, f2) {
		t.Fatalf("two opens of one range: descriptors %d and %d of namespaces %d and %d, want two descriptors of one",
			f1.Fd(), f2.Fd(), nsInode(t, f1), nsInode(t, f2))
	}
	other := c.Open(IDRange{Base: testBase + IDRangeSize})
	defer other.Close()
	if nsInode(t, wait(other)) == nsInode(t, f1) {
		t.Fatal("two ranges share a namespace")
	}
	if c.Len() != 2 {
		t.Fatalf("kept %d namespaces, want 2", c.Len())
	}
	// Full: a third range is opened without being kept.
	third := c.Open(IDRange{Base: testBase + 2*IDRangeSize})
	defer third.Close()
	wait(third)
	if c.Len() != 2 {
		t.Fatalf("kept %d namespaces past the bound of 2", c.Len())
	}
	c.Close()

	dir := t.TempDir()
	layer := filepath.Join(dir, "layer")
	os.MkdirAll(layer, 0o755)
	os.WriteFile(filepath.Join(layer, "f"), nil, 0o644)
	mapped := filepath.Join(dir, "mapped")
	if err := mountIDMapped(layer, mapped, f2); err != nil {
		t.Fatalf("idmapping with a namespace handed out before the cache closed: %v", err)
	}
	defer Unmount(mapped)
	if uid, gid := owner(t, filepath.Join(mapped, "f")); uid != r.Base || gid != r.Base {
		t.Fatalf("a root-owned file shows as %d:%d through the idmapped mount, want %d:%d", uid, gid, r.Base, r.Base)
	}
	// Closed: still opens, without keeping.
	late := c.Open(r)
	defer late.Close()
	wait(late)
	if c.Len() != 0 {
		t.Fatalf("a closed cache keeps %d namespaces", c.Len())
	}
}

// TestUserNSCacheTake: a start takes the kept namespace, the one its layers
// were idmapped with, and the range's next start gets a new one: a
// namespace a sandbox's processes have been in is never handed out again.
func TestUserNSCacheTake(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: user namespaces with ID maps")
	}
	c := NewUserNSCache(4)
	defer c.Close()
	r := IDRange{Base: testBase}
	mapped := c.Open(r)
	defer mapped.Close()
	taken := c.Take(r)
	defer taken.Close()
	ns := nsInode(t, waitNS(t, taken))
	if got := nsInode(t, waitNS(t, mapped)); got != ns {
		t.Errorf("a start took namespace %d, its layers were idmapped with %d", ns, got)
	}
	if c.Len() != 0 {
		t.Errorf("the cache still keeps %d namespaces after the take", c.Len())
	}
	again := c.Take(r)
	defer again.Close()
	if nsInode(t, waitNS(t, again)) == ns {
		t.Error("the range's next start got the namespace the first one took")
	}
}
