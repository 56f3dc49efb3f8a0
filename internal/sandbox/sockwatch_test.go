package sandbox

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSocketWatch: a wait ends when a socket is bound in the directory,
// also one bound before the wait began, and at its limit otherwise.
func TestSocketWatch(t *testing.T) {
	dir := t.TempDir()
	w := watchSocketDir(dir)
	if w == nil {
		t.Skip("no inotify here")
	}
	defer w.close()

	start := time.Now()
	w.wait(50 * time.Millisecond)
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Errorf("a wait with nothing created ended after %s, want its limit", took)
	}

	ln, err := net.Listen("unix", filepath.Join(dir, "early.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start = time.Now()
	w.wait(10 * time.Second)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a socket bound before the wait was not seen (%s)", took)
	}

	go func() {
		time.Sleep(100 * time.Millisecond)
		if ln, err := net.Listen("unix", filepath.Join(dir, "late.sock")); err == nil {
			t.Cleanup(func() { ln.Close() })
		}
	}()
	start = time.Now()
	w.wait(10 * time.Second)
	if took := time.Since(start); took > 5*time.Second || took < 90*time.Millisecond {
		t.Errorf("a wait for a socket bound after 100 ms took %s", took)
	}
}

// TestWaitAgentWatched: a boot that watches the agent's directory gets the
// agent's answer once it binds its socket, and sees an agent that exits
// without binding it as dead, well before the boot's limit.
func TestWaitAgentWatched(t *testing.T) {
	t.Run("binds late", func(t *testing.T) {
		socket := filepath.Join(t.TempDir(), "agent.sock")
		w := watchSocketDir(filepath.Dir(socket))
		if w == nil {
			t.Skip("no inotify here")
		}
		defer w.close()
		conns := newAgentConns()
		defer conns.close()
		inst, err := newInstance("c", os.Getpid(), NetworkEndpoint{}, conns, socket)
		if err != nil {
			t.Fatal(err)
		}
		a := &agentOnSignal{t: t, socket: socket}
		time.AfterFunc(200*time.Millisecond, a.serve)
		start := time.Now()
		if err := waitAgentWatched(context.Background(), inst, w, time.Minute); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 190*time.Millisecond || took > 30*time.Second {
			t.Errorf("the agent answered %s after the wait began, bound at 200 ms", took)
		}
	})
	t.Run("dies unbound", func(t *testing.T) {
		socket := filepath.Join(t.TempDir(), "agent.sock")
		w := watchSocketDir(filepath.Dir(socket))
		if w == nil {
			t.Skip("no inotify here")
		}
		defer w.close()
		cmd := exec.Command("sleep", "0.2")
		if err := cmd.Start(); err != nil {
			t.Skip(err)
		}
		conns := newAgentConns()
		defer conns.close()
		inst, err := newInstance("c", cmd.Process.Pid, NetworkEndpoint{}, conns, socket)
		if err != nil {
			t.Fatal(err)
		}
		go cmd.Wait()
		start := time.Now()
		err = waitAgentWatched(context.Background(), inst, w, time.Minute)
		if err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("err = %v, want the agent's exit", err)
		}
		if took := time.Since(start); took > 30*time.Second {
			t.Errorf("the agent's exit was seen after %s", took)
		}
	})
}

// TestSocketWatchBroken: a watch whose reads fail says so, and is not
// waited on again (its waits would return at once: a busy loop).
func TestSocketWatchBroken(t *testing.T) {
	w := watchSocketDir(t.TempDir())
	if w == nil {
		t.Skip("no inotify here")
	}
	if !w.usable() {
		t.Fatal("a new watch is not usable")
	}
	w.f.Close() // its reads now fail
	w.wait(time.Second)
	if w.usable() {
		t.Error("a watch whose read failed is still usable")
	}
	var none *socketWatch
	if none.usable() {
		t.Error("no watch is usable")
	}
}
