package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestABuildOfAKilledDaemonDiesAtItsNextStart: a RUN step forks (its
// container, in a session and cgroup of its own, and a child of that);
// buildah's parent-death signal reaches buildah only, so after a SIGKILL of
// the daemon the step used to run on for good. The next start of that
// daemon kills all of it, and only it: another daemon's build on the same
// host runs on, until its caller gives up on it, which ends its RUN step
// too.
func TestABuildOfAKilledDaemonDiesAtItsNextStart(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("needs buildah (apt-get install buildah)")
	}
	// A failure below leaves no step running for the next test.
	t.Cleanup(func() { exec.Command("pkill", "-KILL", "-f", "^sleep 10[34][78]$").Run() })
	a := testdaemon.Start(t, testdaemon.Options{})
	b := testdaemon.Start(t, testdaemon.Options{})
	ctx := ctxT(t, 5*time.Minute)
	startSlowBuild := func(d *testdaemon.Daemon, seconds int) (context.CancelFunc, chan error) {
		importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin"}}, layerOf(t, busyboxFiles(t)...)), "bb")
		dockerfile := fmt.Sprintf("FROM bb\nRUN sleep %d & sleep %d\n", seconds, seconds+1)
		bctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, err := d.Client.BuildImage(bctx, bytes.NewReader(layerOf(t, file{name: "Dockerfile", body: dockerfile})), client.BuildOptions{Name: "slow"})
			done <- err
		}()
		return cancel, done
	}
	cancelA, doneA := startSlowBuild(a, 1037)
	defer cancelA()
	cancelB, doneB := startSlowBuild(b, 1047)
	defer cancelB()
	stepA := waitForProcesses(t, "^sleep 103[78]$", 2)
	stepB := waitForProcesses(t, "^sleep 104[78]$", 2)

	for _, pid := range stepA {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !strings.Contains(string(cg), "/"+a.CgroupParent+"/jobs/") {
			t.Errorf("RUN step process %d is outside its daemon's jobs cgroups:\n%s", pid, cg)
		}
	}
	a.Kill(t)
	<-doneA
	if alive := stillRunning(stepA, "sleep 103"); len(alive) != 2 {
		t.Fatalf("the RUN step died with the daemon (%d of 2 left): the test shows nothing", len(alive))
	}
	a.Start(t)
	if alive := runningAfter(5*time.Second, stepA, "sleep 103"); len(alive) != 0 {
		t.Errorf("the restarted daemon left its killed build's RUN step running: %v", alive)
	}
	if alive := stillRunning(stepB, "sleep 104"); len(alive) != 2 {
		t.Errorf("the restarted daemon killed another daemon's build: %d of its 2 processes left", len(alive))
	}
	select {
	case err := <-doneB:
		t.Errorf("the other daemon's build ended: %v", err)
	default:
	}

	cancelB()
	<-doneB
	if alive := runningAfter(10*time.Second, stepB, "sleep 104"); len(alive) != 0 {
		t.Errorf("a build its caller gave up on left its RUN step running: %v", alive)
	}
}

// waitForProcesses waits for n processes whose command line matches
// pattern (pgrep -f) and returns their PIDs.
func waitForProcesses(t *testing.T, pattern string, n int) []int {
	t.Helper()
	var pids []int
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-f", pattern).Output()
		pids = pids[:0]
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		if len(pids) == n {
			return pids
		}
	}
	t.Fatalf("%d processes match %q, want %d", len(pids), pattern, n)
	return nil
}

// stillRunning returns the PIDs whose command line still starts with
// prefix (a PID reused by another process does not count).
func stillRunning(pids []int, prefix string) []int {
	var alive []int
	for _, pid := range pids {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.HasPrefix(strings.ReplaceAll(string(cmdline), "\x00", " "), prefix) {
			alive = append(alive, pid)
		}
	}
	return alive
}

// runningAfter waits up to limit for the processes to end and returns
// those still running then.
func runningAfter(limit time.Duration, pids []int, prefix string) []int {
	deadline := time.Now().Add(limit)
	for {
		alive := stillRunning(pids, prefix)
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(50 * time.Millisecond)
	}
}
