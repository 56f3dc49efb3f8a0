package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSweepKillsWhatAJobForkedAndOnlyThatDaemons: a job's child forks a
// process that leaves its session (as a RUN step's container does); the
// parent-death signal would reach only the child. A sweep of the jobs
// tree by a later start with the same parent kills both, and leaves the
// job of another parent running.
func TestSweepKillsWhatAJobForkedAndOnlyThatDaemons(t *testing.T) {
	h := testHost(t)
	if h.cgroup2 == "" {
		t.Skip("no cgroup2 hierarchy: jobs are not held on a v1-only host")
	}
	mine, other := fmt.Sprintf("sandboxd-test-%d-jobs", os.Getpid()), fmt.Sprintf("sandboxd-test-%d-other", os.Getpid())
	t.Cleanup(func() {
		for _, p := range []string{mine, other} {
			h.Jobs(p).Sweep()
			h.RemoveParentIfEmpty(p)
		}
	})
	child, grandchild := startJob(t, h.Jobs(mine), 1061)
	otherChild, otherGrandchild := startJob(t, h.Jobs(other), 1063)

	if err := h.Jobs(mine).Sweep(); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	waitDead(t, child)
	if !gone(grandchild, 10*time.Second) {
		t.Errorf("the job's grandchild %d outlived the sweep", grandchild)
	}
	if _, err := os.Stat(filepath.Join(h.cgroup2, mine, "jobs")); !os.IsNotExist(err) {
		t.Errorf("the jobs tree is still there after the sweep: %v", err)
	}
	if gone(otherChild.Process.Pid, 0) || gone(otherGrandchild, 0) {
		t.Error("the sweep killed another parent's job")
	}
}

// startJob starts, in a new job of jobs, a shell that forks `setsid sleep
// N` (its own session and process group) and then runs sleep N+1; it
// returns the shell's command and the grandchild's PID.
func startJob(t *testing.T, jobs *Jobs, n int) (*exec.Cmd, int) {
	t.Helper()
	job, err := jobs.Start()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", fmt.Sprintf("setsid sleep %d & echo $!; exec sleep %d", n, n+1))
	job.Attach(cmd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := strconv.Atoi(line[:len(line)-1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !gone(grandchild, 0) {
			syscall.Kill(grandchild, syscall.SIGKILL)
		}
	})
	return cmd, grandchild
}

// gone reports whether the process pid has ended within limit: it no
// longer exists or is a zombie.
func gone(pid int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		i := strings.LastIndexByte(string(stat), ')')
		if err != nil || i < 0 || strings.HasPrefix(string(stat[i:]), ") Z") {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
