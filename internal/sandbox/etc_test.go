package sandbox

import (
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestInitEtcWritesIntoTheSandboxRootOnce: the files go into the
// sandbox's root (its own layer), once; an older daemon's bind-mounted
// files are carried over, bounded; symlinks in the root cannot send the
// writes onto the host.
func TestInitEtcWritesIntoTheSandboxRootOnce(t *testing.T) {
	dir := t.TempDir()
	p := paths{dir: dir, rootfs: filepath.Join(dir, "rootfs"), etc: filepath.Join(dir, "etc"), etcWritten: filepath.Join(dir, "etc.written")}
	outside := filepath.Join(dir, "host-file")
	os.WriteFile(outside, []byte("host\n"), 0o600)
	os.MkdirAll(filepath.Join(p.rootfs, "etc"), 0o755)
	// The image's files are symlinks, one of them out of the root.
	os.Symlink("../../host-file", filepath.Join(p.rootfs, "etc", "hosts"))
	os.Symlink(outside, filepath.Join(p.rootfs, "etc", "resolv.conf"))
	// An older daemon kept a hostname the sandbox edited, and a huge hosts.
	os.MkdirAll(p.etc, 0o755)
	os.WriteFile(filepath.Join(p.etc, "hostname"), []byte("edited\n"), 0o644)
	os.WriteFile(filepath.Join(p.etc, "hosts"), make([]byte, 10<<20), 0o644)

	dns := []netip.Addr{netip.MustParseAddr("192.0.2.53")}
	if err := initEtc(p, "box", NetworkInternet, dns, -1); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		data, _ := os.ReadFile(filepath.Join(p.rootfs, "etc", name))
		return string(data)
	}
	if got := read("hostname"); got != "edited\n" {
		t.Errorf("hostname = %q, want the edited one carried over", got)
	}
	if got := len(read("hosts")); got != maxLegacyEtcBytes {
		t.Errorf("hosts carried over with %d bytes, want the bound %d", got, maxLegacyEtcBytes)
	}
	if got := read("resolv.conf"); got != "nameserver 192.0.2.53\n" {
		t.Errorf("resolv.conf = %q", got)
	}
	if data, _ := os.ReadFile(outside); string(data) != "host\n" {
		t.Errorf("a write followed a symlink out of the root: the host file holds %d bytes", len(data))
	}
	if _, err := os.Stat(p.etc); !os.IsNotExist(err) {
		t.Errorf("the old bind-mount directory is still there: %v", err)
	}

	// Later boots leave the sandbox's edits alone.
	os.WriteFile(filepath.Join(p.rootfs, "etc", "hostname"), []byte("mine\n"), 0o644)
	if err := initEtc(p, "box", NetworkInternet, dns, -1); err != nil {
		t.Fatal(err)
	}
	if got := read("hostname"); got != "mine\n" {
		t.Errorf("a second boot rewrote hostname: %q", got)
	}

	// A root whose /etc leads out of it is refused.
	q := p
	q.rootfs, q.etcWritten = filepath.Join(dir, "rootfs2"), filepath.Join(dir, "etc2.written")
	os.MkdirAll(q.rootfs, 0o755)
	os.Symlink("../../", filepath.Join(q.rootfs, "etc"))
	if err := initEtc(q, "box", NetworkNone, nil, -1); err == nil {
		t.Error("writing through an /etc that climbs out of the root succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "hostname")); err == nil {
		t.Error("a file was written outside the root")
	}
}

// TestRewriteRootFilesInPlace: a warm sandbox's files are rewritten in
// place (same inode, no whiteout on an overlay), shorter or longer; a
// symlink or a hard link is never written through, but replaced by a
// file of the sandbox's own.
func TestRewriteRootFilesInPlace(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	etc := filepath.Join(rootfs, "etc")
	os.MkdirAll(etc, 0o755)
	if err := writeRootFiles(rootfs, map[string]string{"hostname": "warm-0123456789\n", "hosts": hostsFile("warm-0123456789")}, -1); err != nil {
		t.Fatal(err)
	}
	inode := func(name string) uint64 {
		fi, err := os.Lstat(filepath.Join(etc, name))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	read := func(name string) string {
		data, _ := os.ReadFile(filepath.Join(etc, name))
		return string(data)
	}
	before := inode("hosts")
	for _, name := range []string{"a", "a-much-longer-name-than-the-placeholder-had"} {
		if err := rewriteRootFiles(rootfs, map[string]string{"hostname": name + "\n", "hosts": hostsFile(name)}, -1); err != nil {
			t.Fatal(err)
		}
		if got := read("hostname"); got != name+"\n" {
			t.Errorf("hostname = %q, want %q", got, name+"\n")
		}
		if got := read("hosts"); got != hostsFile(name) {
			t.Errorf("hosts = %q", got)
		}
	}
	if inode("hosts") != before {
		t.Error("hosts was replaced, not rewritten in place")
	}

	outside := filepath.Join(dir, "host-file")
	os.WriteFile(outside, []byte("host\n"), 0o600)
	os.Remove(filepath.Join(etc, "hosts"))
	os.Symlink("../../host-file", filepath.Join(etc, "hosts"))
	other := filepath.Join(rootfs, "other")
	os.Link(filepath.Join(etc, "hostname"), other)
	if err := rewriteRootFiles(rootfs, map[string]string{"hostname": "b\n", "hosts": hostsFile("b")}, -1); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(outside); string(data) != "host\n" {
		t.Errorf("a write followed a symlink out of the root: the host file holds %q", data)
	}
	if data, _ := os.ReadFile(other); string(data) == "b\n" {
		t.Error("a write went through a hard link")
	}
	if fi, err := os.Lstat(filepath.Join(etc, "hosts")); err != nil || !fi.Mode().IsRegular() || read("hosts") != hostsFile("b") {
		t.Errorf("hosts after a symlink: %v, %v, %q", fi, err, read("hosts"))
	}
	if read("hostname") != "b\n" {
		t.Errorf("hostname after a hard link: %q", read("hostname"))
	}
}
