package agent

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// checkpointStandIn stands in for gVisor's checkpoint file in tests: each
// open is the read end of a new pipe, left in blocking mode (so that, like
// gVisor's file, Go's poller never takes it and a close cannot end a
// blocked read of it), whose write end reports the checkpoint's end.
type checkpointStandIn struct {
	reports []*os.File // write ends, one per open
}

func (c *checkpointStandIn) open() (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, err
	}
	c.reports = append(c.reports, os.NewFile(uintptr(p[1]), "report"))
	return p[0], nil
}

// released reports whether the agent has let go of the i-th open: no
// descriptor of this process but the write end is the pipe's. It waits up
// to 10 s for it.
func (c *checkpointStandIn) released(t *testing.T, i int) bool {
	t.Helper()
	w := c.reports[i]
	pipe, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(w.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		held := false
		for _, e := range entries {
			if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); link == pipe && e.Name() != strconv.Itoa(int(w.Fd())) {
				held = true
			}
		}
		if !held {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func awaitSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket after the checkpoint's end: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSuspendedListenerWakesAtTheCheckpointsEnd: a suspended listener
// binds its socket again by itself once gVisor's checkpoint file reports
// the end of the checkpoint, with no signal, and lets go of the file.
func TestSuspendedListenerWakesAtTheCheckpointsEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	l := newSuspendableListener(ln, path, t.Logf)
	defer l.Close()
	var file checkpointStandIn
	l.openCheckpoint = file.open

	if err := l.suspend(); err != nil {
		t.Fatal(err)
	}
	if _, err := file.reports[0].WriteString("restore\n"); err != nil {
		t.Fatal(err)
	}
	awaitSocket(t, path)
	if !file.released(t, 0) {
		t.Error("the checkpoint file is still open after the checkpoint's end")
	}
}

// TestFailedCheckpointLeavesNoWatch: a checkpoint that never began (runsc
// refused it, the daemon died) reports nothing; the resume that follows
// (the signal, the daemon's restart) lets go of the checkpoint file and
// its wait at once, however many pauses fail, and the next pause is woken
// by its own checkpoint's end, never by a late report of an earlier one.
func TestFailedCheckpointLeavesNoWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	l := newSuspendableListener(ln, path, t.Logf)
	defer l.Close()
	var file checkpointStandIn
	l.openCheckpoint = file.open

	fdsBefore := openFDs(t)
	const failed = 20
	for i := range failed {
		if err := l.suspend(); err != nil {
			t.Fatal(err)
		}
		if err := l.resume(); err != nil { // the signal
			t.Fatal(err)
		}
		if !file.released(t, i) {
			t.Fatalf("failed pause %d: the checkpoint file is still open after the resume", i)
		}
		file.reports[i].Close()
	}
	if after := openFDs(t); after > fdsBefore {
		t.Errorf("%d open descriptors after %d failed pauses, %d before", after, failed, fdsBefore)
	}

	if err := l.suspend(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket still there after the pause after the failed ones: %v", err)
	}
	if _, err := file.reports[failed].WriteString("restore\n"); err != nil {
		t.Fatal(err)
	}
	awaitSocket(t, path)
	if !file.released(t, failed) {
		t.Error("the checkpoint file is still open after the checkpoint's end")
	}
	file.reports[failed].Close()

	// Close while suspended ends the wait too, and waits for it.
	if err := l.suspend(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if !file.released(t, failed+1) {
		t.Error("the checkpoint file is still open after Close")
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
