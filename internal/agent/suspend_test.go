package agent

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
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
