package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func unpack(t *testing.T, budget int64, entries ...entry) (string, error) {
	t.Helper()
	parent := t.TempDir()
	dir := filepath.Join(parent, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := unpackLayer(context.Background(), bytes.NewReader(layerTar(t, entries...)), dir,
		unpackLimits{budget: &budget, maxEntries: 1000})
	return dir, err
}

// TestUnpackRefusesToEscape tries the known ways out of a layer directory
// and checks each is refused and wrote nothing outside.
func TestUnpackRefusesToEscape(t *testing.T) {
	skipUnlessRoot(t)
	tests := []struct {
		name    string
		entries []entry
	}{
		{"dot-dot", []entry{f("../escaped", "x")}},
		{"dot-dot inside", []entry{d("a"), f("a/../../escaped", "x")}},
		{"through absolute symlink", []entry{sl("link", "/"), f("link/escaped", "x")}},
		{"through relative symlink", []entry{sl("link", ".."), f("link/escaped", "x")}},
		{"through symlink chain", []entry{d("a"), sl("a/b", "../c"), sl("c", "../.."), f("a/b/escaped", "x")}},
		{"symlinked directory then file", []entry{sl("etc", "/tmp"), f("etc/escaped", "x")}},
		{"hard link out", []entry{hl("passwd", "../../../../etc/passwd")}},
		{"hard link to a host path", []entry{hl("passwd", "/etc/passwd")}},
		{"hard link through symlink", []entry{sl("s", "/etc"), hl("passwd", "s/passwd")}},
		{"whiteout dot-dot", []entry{f("a/.wh...", "")}},
		{"whiteout through symlink", []entry{sl("s", "/"), f("s/.wh.escaped", "")}},
		{"opaque through symlink", []entry{sl("s", "/"), f("s/.wh..wh..opq", "")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, err := unpack(t, 1<<20, tc.entries...)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unpack = %v, want ErrInvalid", err)
			}
			parent := filepath.Dir(dir)
			for _, p := range []string{filepath.Join(parent, "escaped"), "/escaped", "/tmp/escaped"} {
				if _, err := os.Lstat(p); err == nil {
					os.Remove(p)
					t.Errorf("%s was written outside the layer", p)
				}
			}
			var st unix.Stat_t
			if unix.Stat("/etc/passwd", &st) == nil && st.Nlink > 1 {
				t.Errorf("/etc/passwd has %d links", st.Nlink)
			}
		})
	}
}

// TestUnpackKeepsOwnershipModesAndLinks checks what a layer carries
// besides file contents.
func TestUnpackKeepsOwnershipModesAndLinks(t *testing.T) {
	skipUnlessRoot(t)
	dir, err := unpack(t, 1<<20,
		entry{name: "usr/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "usr/bin/", typ: tar.TypeDir, mode: 0o750, uid: 0, gid: 4},
		entry{name: "usr/bin/suid", body: "#!/bin/sh\n", mode: 0o4755, uid: 0, gid: 0},
		entry{name: "home/app/", typ: tar.TypeDir, mode: 0o700, uid: 1234, gid: 5678},
		entry{name: "home/app/data", body: "hello", mode: 0o640, uid: 1234, gid: 5678,
			xattrs: map[string]string{"user.note": "kept", "trusted.overlay.redirect": "/etc", "security.selinux": "x"}},
		hl("home/app/data-link", "home/app/data"),
		sl("home/app/rel", "data"),
		sl("home/app/abs", "/etc/passwd"),
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		entry{name: "pipe", typ: tar.TypeFifo, mode: 0o600},
		f(".sandboxd/agent", "fake agent"),
		f("file", "first"),
		f("file", "second"), // a later entry of the same layer wins
	)
	if err != nil {
		t.Fatal(err)
	}
	check := func(p string, mode os.FileMode, uid, gid uint32) {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, p), &st); err != nil {
			t.Errorf("%s: %v", p, err)
			return
		}
		if got := os.FileMode(st.Mode & 0o7777); got != mode&0o7777 {
			t.Errorf("%s: mode %o, want %o", p, got, mode&0o7777)
		}
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
	}
	check("usr/bin", 0o750, 0, 4)
	check("usr/bin/suid", 0o4755, 0, 0)
	check("home/app", 0o700, 1234, 5678)
	check("home/app/data", 0o640, 1234, 5678)
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(dir, "home/app/data"), &a)
	unix.Stat(filepath.Join(dir, "home/app/data-link"), &b)
	if a.Ino != b.Ino {
		t.Error("hard link is not a hard link")
	}
	if l, _ := os.Readlink(filepath.Join(dir, "home/app/abs")); l != "/etc/passwd" {
		t.Errorf("symlink target = %q (kept as it is, resolved only inside the sandbox)", l)
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(filepath.Join(dir, "home/app/data"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
		t.Errorf("user.note = %q, %v", buf[:n], err)
	}
	for _, attr := range []string{"trusted.overlay.redirect", "security.selinux"} {
		if _, err := unix.Lgetxattr(filepath.Join(dir, "home/app/data"), attr, buf); err == nil {
			t.Errorf("%s was kept; it must be dropped", attr)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "dev/null")); err == nil {
		t.Error("a device node was created")
	}
	if fi, err := os.Lstat(filepath.Join(dir, "pipe")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, ".sandboxd")); err == nil {
		t.Error("the layer wrote into /.sandboxd, which is reserved")
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "file")); string(data) != "second" {
		t.Errorf("file = %q, want the later entry", data)
	}
}

func TestUnpackWhiteouts(t *testing.T) {
	skipUnlessRoot(t)
	dir, err := unpack(t, 1<<20,
		d("etc"),
		f("etc/.wh.motd", ""),
		d("var/cache"),
		f("var/cache/.wh..wh..opq", ""),
		f("var/cache/new", "x"),
	)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "etc/motd"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout is mode %o rdev %d, want a 0/0 character device", st.Mode, st.Rdev)
	}
	buf := make([]byte, 8)
	n, err := unix.Lgetxattr(filepath.Join(dir, "var/cache"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr = %q, %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc/.wh.motd")); err == nil {
		t.Error("the whiteout file itself was written")
	}
}

func TestUnpackBounds(t *testing.T) {
	skipUnlessRoot(t)
	t.Run("file larger than the budget", func(t *testing.T) {
		// The header claims a terabyte: refused before a byte is read.
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "huge", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644})
		dir := filepath.Join(t.TempDir(), "root")
		os.Mkdir(dir, 0o755)
		budget := int64(1 << 20)
		_, err := unpackLayer(context.Background(), &buf, dir, unpackLimits{budget: &budget, maxEntries: 10})
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unpack = %v, want ErrTooLarge", err)
		}
	})
	t.Run("budget shared across files", func(t *testing.T) {
		_, err := unpack(t, 10, f("a", "123456"), f("b", "123456"))
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unpack = %v, want ErrTooLarge", err)
		}
	})
	t.Run("too many entries", func(t *testing.T) {
		var entries []entry
		for i := 0; i < 1001; i++ {
			entries = append(entries, f("f"+strings.Repeat("x", i%50)+string(rune('a'+i%26)), ""))
		}
		_, err := unpack(t, 1<<20, entries...)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unpack = %v, want ErrTooLarge", err)
		}
	})
	t.Run("truncated tar", func(t *testing.T) {
		data := layerTar(t, f("a", strings.Repeat("x", 4096)))
		dir := filepath.Join(t.TempDir(), "root")
		os.Mkdir(dir, 0o755)
		budget := int64(1 << 20)
		_, err := unpackLayer(context.Background(), bytes.NewReader(data[:1000]), dir, unpackLimits{budget: &budget, maxEntries: 10})
		if err == nil {
			t.Fatal("a truncated layer unpacked without error")
		}
	})
}
