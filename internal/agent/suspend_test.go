package agent

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSuspendableListener: suspending closes every accepted connection
// and the listener and unlinks the socket (nothing of the host is held for
// a checkpoint); Accept waits across it; resume binds the same path again.
func TestSuspendableListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	l := newSuspendableListener(ln, path, t.Logf)
	defer l.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	held, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	<-accepted

	if err := l.suspend(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after suspend: %v", err)
	}
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("held connection after suspend: read %v, want EOF", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Error("dial succeeded while suspended")
	}

	if err := l.resume(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial after resume: %v", err)
	}
	defer c.Close()
	select {
	case got, ok := <-accepted:
		if !ok {
			t.Fatal("Accept ended across the suspension")
		}
		got.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after resume")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket after resume: %v, %v", fi, err)
	}
}

// TestSuspendNeedsARebindableSocket: an agent whose socket the daemon
// handed over (bound on the host) refuses to let go of it.
func TestSuspendNeedsARebindableSocket(t *testing.T) {
	ln, err := Listen(filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	l := newSuspendableListener(ln, "", t.Logf)
	defer l.Close()
	if err := l.suspend(); !errors.Is(err, errNotRebindable) {
		t.Errorf("suspend: %v, want errNotRebindable", err)
	}
}

// TestSuspendedListenerWakesAtTheCheckpointsEnd: a suspended listener
// binds its socket again by itself once gVisor's checkpoint file (here a
// pipe standing for it) reports the end of the checkpoint, with no
// signal; a listener resumed otherwise first lets go of the file.
func TestSuspendedListenerWakesAtTheCheckpointsEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	l := newSuspendableListener(ln, path, t.Logf)
	defer l.Close()
	var report *os.File // the pipe's write end: gVisor's side
	l.openCheckpoint = func() (*os.File, error) {
		r, w, err := os.Pipe()
		report = w
		return r, err
	}

	if err := l.suspend(); err != nil {
		t.Fatal(err)
	}
	if _, err := report.WriteString("restore\n"); err != nil {
		t.Fatal(err)
	}
	report.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket after the checkpoint's end: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Suspended again and resumed by the signal: the file is let go of.
	if err := l.suspend(); err != nil {
		t.Fatal(err)
	}
	if err := l.resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := report.WriteString("restore\n"); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("writing to the checkpoint file after a resume: %v, want EPIPE (closed)", err)
	}
	report.Close()
}
