package proctree

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		line string
		want Proc
		ok   bool
	}{
		{"42 (sleep) S 7 42 7 0 -1 4194304 96 0 0 0 3 4 0 0 20 0 1 0 12345 5 6 7", Proc{42, 7, 'S', 12345, 7}, true},
		{"42 (a) b) (c) Z 9 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0", Proc{42, 9, 'Z', 99, 0}, true},
		{"42 (x) S 1 2 3 4 5 6 7 8 9 10 x 0 0 0 0 0 0 0 1 0", Proc{}, false},
		{"42 (x y", Proc{}, false},
		{"42 (x) S 1 2", Proc{}, false},
	}
	for _, tt := range tests {
		got, err := parseStat(42, []byte(tt.line))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v ok=%v", tt.line, got, err, tt.want, tt.ok)
		}
	}
}

// Now is the start time a process started now gets; At(t), asked for
// long after t, is what Now was at t.
func TestNowAndAtMatchStartTimes(t *testing.T) {
	t0 := time.Now()
	before := Now()
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	p, err := stat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.Start < before || p.Start > Now() {
		t.Errorf("start %d outside [%d, %d]", p.Start, before, Now())
	}
	time.Sleep(5 * time.Second / TicksPerSecond)
	if at := At(t0); at > before || at+1 < before || p.Start < at {
		t.Errorf("At(t0) = %d; Now() at t0 was %d, the start %d", at, before, p.Start)
	}
}

func cmdline(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func TestDescendantsAndKill(t *testing.T) {
	// An "old" job, then (after since) a new one with a grandchild. The
	// shell starts the new job only when told, so that since falls
	// between the two however slowly a loaded machine starts them.
	cmd := exec.Command("/bin/sh", "-c", "sleep 2001 & read go; sh -c 'sleep 2002 & wait' & wait")
	release, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	waitForDescendant(t, cmd.Process.Pid, "sleep 2001")
	tick := time.Second / TicksPerSecond
	time.Sleep(2 * tick) // start times count whole ticks
	since := Now()
	time.Sleep(2 * tick)
	release.Write([]byte("go\n"))
	waitForDescendant(t, cmd.Process.Pid, "sleep 2002")

	var all, recent []string
	procs, err := Descendants(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		all = append(all, cmdline(p.PID))
	}
	procs, _ = Descendants(cmd.Process.Pid, since)
	for _, p := range procs {
		recent = append(recent, cmdline(p.PID))
	}
	if !slices.Contains(all, "sleep 2001") || !slices.Contains(all, "sleep 2002") {
		t.Errorf("all descendants %q lack a sleep", all)
	}
	if slices.Contains(recent, "sleep 2001") || !slices.Contains(recent, "sleep 2002") || len(recent) != 2 {
		t.Errorf("recent descendants = %q, want the new sh and its sleep 2002", recent)
	}

	for i := 0; ; i++ {
		n, err := Kill(cmd.Process.Pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if i > 100 {
			t.Fatal("descendants survive SIGKILL")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-done: // the shell's children died, so its wait returned
	case <-time.After(3 * time.Second):
		t.Fatal("root did not finish after its descendants were killed")
	}
}

// waitForDescendant waits until a descendant of root runs the command line
// want (a forked child shows its parent's until it execs).
func waitForDescendant(t *testing.T, root int, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		procs, err := Descendants(root, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range procs {
			if cmdline(p.PID) == want {
				return
			}
		}
	}
	t.Fatalf("no descendant of %d runs %q", root, want)
}
