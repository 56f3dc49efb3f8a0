package runtime

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSealedCopyCannotBeWritten tries to change the sealed copy the
// daemon runs crun from, as a container's process that reached it through
// /proc/<pid>/exe would (CVE-2019-5736): every write, resize and unsealing
// fails, and the copy keeps the binary's bytes.
func TestSealedCopyCannotBeWritten(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "crun")
	want := bytes.Repeat([]byte("\x7fELF not really"), 1000)
	if err := os.WriteFile(bin, want, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := sealedCopy(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil || seals != crunSeals {
		t.Fatalf("seals %#x (%v), want crun's own %#x", seals, err, crunSeals)
	}
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		if _, err := w.Write([]byte("#!/bin/sh\n")); err == nil {
			t.Error("a write through /proc/self/fd succeeded")
		}
		if err := w.Truncate(0); err == nil {
			t.Error("a truncate through /proc/self/fd succeeded")
		}
		w.Close()
	}
	if _, err := f.WriteAt([]byte("#!/bin/sh\n"), 0); err == nil {
		t.Error("a write to the copy succeeded")
	}
	if err := f.Truncate(int64(len(want)) + 4096); err == nil {
		t.Error("growing the copy succeeded")
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE); err == nil {
		t.Error("adding a seal succeeded: the seals are not sealed")
	}
	if _, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		t.Error("a shared writable mapping of the copy succeeded")
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("the copy holds %d bytes (%v), want the binary's %d", len(got), err, len(want))
	}
}

// TestCrunRunsFromASealedCopy: a crun Runtime starts crun from its sealed
// copy (which crun takes for its own, so it neither mounts nor executes
// itself again); runc keeps its path.
func TestCrunRunsFromASealedCopy(t *testing.T) {
	path, err := exec.LookPath("crun")
	if err != nil {
		t.Skip("needs crun")
	}
	r := New("crun", path, t.TempDir())
	if r.sealErr != nil {
		t.Fatalf("no sealed copy: %v", r.sealErr)
	}
	if exe := r.exe(); !strings.HasPrefix(exe, "/proc/") || exe == path {
		t.Fatalf("crun starts from %q, want its sealed copy under /proc", exe)
	}
	out, err := exec.Command(r.exe(), "--version").Output()
	if err != nil || !bytes.HasPrefix(out, []byte("crun version")) {
		t.Fatalf("the sealed copy's --version: %v: %q", err, out)
	}
	if r := New("runc", path, t.TempDir()); r.exe() != path || r.sealed != nil {
		t.Errorf("runc starts from %q, want its path %q", r.exe(), path)
	}
}
