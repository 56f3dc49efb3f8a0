package proctree

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		line string
		want Proc
		ok   bool
	}{
		{"42 (sleep) S 7 42 7 0 -1 4194304 96 0 0 0 3 4 0 0 20 0 1 0 12345 5 6 7", Proc{42, 7, 7, 'S', 12345, 7}, true},
		{"42 (a) b) (c) Z 9 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0", Proc{42, 9, 1, 'Z', 99, 0}, true},
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

// A process whose parent ended is adopted by the reaper, out of the
// shell's tree: CommandProcs finds the command's by the shell's session,
// and leaves out an earlier command's and one in a session of its own.
func TestCommandProcsFindsAdoptedProcesses(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	cmd := exec.Command("/bin/sh", "-c", "(sleep 2011 &); read go; (sleep 2012 &); (setsid sleep 2013 &); sleep 2014")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	release, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	root := cmd.Process.Pid
	defer cmd.Wait()
	defer cmd.Process.Kill()
	waitForAdopted(t, "sleep 2011")
	tick := time.Second / TicksPerSecond
	time.Sleep(2 * tick) // start times count whole ticks
	since := Now()
	time.Sleep(2 * tick)
	release.Write([]byte("go\n"))
	waitForDescendant(t, root, "sleep 2014")
	waitForAdopted(t, "sleep 2012")
	waitForAdopted(t, "sleep 2013")
	defer killAdopted(t, "sleep 2011", "sleep 2012", "sleep 2013")

	var got []string
	procs, err := CommandProcs(root, since)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		got = append(got, cmdline(p.PID))
	}
	slices.Sort(got)
	if want := []string{"sleep 2012", "sleep 2014"}; !slices.Equal(got, want) {
		t.Errorf("CommandProcs = %q, want %q", got, want)
	}
	if n, err := KillCommand(root, since); n != 2 || err != nil {
		t.Errorf("KillCommand = %d, %v; want 2 killed", n, err)
	}
}

// waitForAdopted waits until a child of this process (adopted: the test
// starts no sleep itself) runs the command line want.
func waitForAdopted(t *testing.T, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if adopted(t, want) != 0 {
			return
		}
	}
	t.Fatalf("no adopted process runs %q", want)
}

func adopted(t *testing.T, want string) int {
	procs, err := list()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if p.PPID == os.Getpid() && p.State != 'Z' && cmdline(p.PID) == want {
			return p.PID
		}
	}
	return 0
}

// killAdopted kills and reaps the adopted processes that run the given
// command lines.
func killAdopted(t *testing.T, cmdlines ...string) {
	procs, _ := list()
	for _, p := range procs {
		if p.PPID == os.Getpid() && slices.Contains(cmdlines, cmdline(p.PID)) {
			unix.Kill(p.PID, unix.SIGKILL)
			var ws unix.WaitStatus
			unix.Wait4(p.PID, &ws, 0, nil)
		}
	}
}
