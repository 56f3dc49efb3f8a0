package reaper

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// One reaper per test process: it waits on all of the process's children.
var theReaper = func() *Reaper {
	r, err := New(slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	go r.Run(context.Background())
	return r
}()

func start(t *testing.T, pause time.Duration, argv ...string) (int, <-chan Status) {
	t.Helper()
	ch := make(chan Status, 1)
	pid, err := theReaper.Start(func() (int, error) {
		p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{})
		if err != nil {
			return 0, err
		}
		time.Sleep(pause) // lets the child exit (and be reaped) before registration
		return p.Pid, nil
	}, func(st Status) { ch <- st })
	if err != nil {
		t.Fatal(err)
	}
	return pid, ch
}

func wait(t *testing.T, ch <-chan Status) Status {
	t.Helper()
	select {
	case st := <-ch:
		return st
	case <-time.After(5 * time.Second):
		t.Fatal("no exit status")
		return Status{}
	}
}

func TestExitStatuses(t *testing.T) {
	tests := []struct {
		name  string
		pause time.Duration
		argv  []string
		code  int
	}{
		{"exit 0", 0, []string{"/bin/true"}, 0},
		{"exit 3", 0, []string{"/bin/sh", "-c", "exit 3"}, 3},
		{"killed", 0, []string{"/bin/sh", "-c", "kill -9 $$"}, 137},
		{"exits before registration", 200 * time.Millisecond, []string{"/bin/sh", "-c", "exit 5"}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pid, ch := start(t, tt.pause, tt.argv...)
			st := wait(t, ch)
			if st.PID != pid || st.ExitCode() != tt.code {
				t.Errorf("status %+v (code %d), want pid %d code %d", st, st.ExitCode(), pid, tt.code)
			}
		})
	}
}

func TestStartFailure(t *testing.T) {
	_, err := theReaper.Start(func() (int, error) { return 0, fmt.Errorf("boom") }, func(Status) { t.Error("onExit called") })
	if err == nil {
		t.Fatal("no error")
	}
}

func TestOrphansAreReaped(t *testing.T) {
	// The shell exits at once; its children are re-parented to this
	// process (a subreaper) and must not stay zombies.
	_, ch := start(t, 0, "/bin/sh", "-c", "for i in 1 2 3 4 5; do sleep 0.05 & done; exit 0")
	wait(t, ch)
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := children(t)
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d children (live or zombie) left", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIsSubreaper(t *testing.T) {
	var v int
	if err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(&v)), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if v != 1 {
		t.Error("not a child subreaper")
	}
}

// children counts processes whose parent is this process.
func children(t *testing.T) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	self := fmt.Sprint(os.Getpid())
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && f[1] == self {
			n++
		}
	}
	return n
}
