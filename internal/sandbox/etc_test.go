package sandbox

import (
	"net/netip"
	"os"
	"path/filepath"
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
