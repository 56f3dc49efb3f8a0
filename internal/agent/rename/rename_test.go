package rename

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/rawio"
)

// The name arrives on a non-blocking pipe read with raw system calls in
// the runtime's poller: a name written later wakes the reader, and end of
// file ends it.
func TestRawReaderReadsANameThatComesLater(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(p[1]), "w")
	defer w.Close()
	r := os.NewFile(uintptr(p[0]), "r")
	defer r.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	in := rawio.Reader{RC: rc}
	go func() {
		time.Sleep(20 * time.Millisecond)
		w.WriteString("demo-1\n")
	}()
	name, err := readName(in)
	if err != nil || name != "demo-1" {
		t.Fatalf("readName = %q, %v; want demo-1", name, err)
	}
	w.Close()
	if n, err := io.Copy(io.Discard, in); n != 0 || err != nil {
		t.Errorf("after the name and end of file: %d bytes, %v", n, err)
	}
}

// writeFile replaces a file's content and never follows a link.
func TestWriteFileReplacesAndRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hosts")
	if err := os.WriteFile(path, []byte("a much longer placeholder content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(path, "127.0.1.1\tdemo\n"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "127.0.1.1\tdemo\n" {
		t.Errorf("content %q", b)
	}
	link := filepath.Join(dir, "hostname")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(link, "x\n"); !errors.Is(err, unix.ELOOP) {
		t.Errorf("writing through a link: %v, want ELOOP", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "127.0.1.1\tdemo\n" {
		t.Errorf("the link's target was written: %q", b)
	}
}
