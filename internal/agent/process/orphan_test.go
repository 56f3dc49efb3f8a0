package process

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// forkServerAgentEnv makes TestForkServerAgent the agent of
// TestForkServerDiesWithItsAgent: it starts a fork server, prints its
// PID and the PID of the process it forked ahead, and waits to be killed.
const forkServerAgentEnv = "SANDBOXD_TEST_FORK_SERVER_AGENT"

func TestForkServerAgent(t *testing.T) {
	runDir := os.Getenv(forkServerAgentEnv)
	if runDir == "" {
		t.Skip("the agent of TestForkServerDiesWithItsAgent")
	}
	m := newManager(t, Config{RunDir: runDir})
	// HOME is a directory of the test's own: the host's /root/.profile may
	// run anything (a pyenv init took 8 s under load), and the test is
	// about the fork server, not about root's profile.
	o := StartOptions{Login: true, Cwd: "/tmp", Env: []string{"PATH=/usr/bin:/bin", "HOME=" + runDir}}
	if !m.PrepareLogin(context.Background(), o) {
		t.Fatal("no fork server")
	}
	m.spareMu.Lock()
	fs := m.fork
	m.spareMu.Unlock()
	fs.readyMu.Lock()
	ready := fs.ready
	fs.readyMu.Unlock()
	if ready == nil {
		t.Fatal("no process forked ahead")
	}
	fmt.Printf("pids %d %d\n", fs.sp.pid, ready.fp.pid)
	time.Sleep(time.Minute)
}

// TestForkServerDiesWithItsAgent: an agent killed with SIGKILL (as a test
// binary that runs agents on the host is, at its timeout) leaves neither
// its fork server nor the process forked ahead behind.
func TestForkServerDiesWithItsAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestForkServerAgent$")
	// The agent is killed, so its own temporary directories are never
	// removed: they go below this test's (one was left in /tmp per run).
	cmd.Env = append(os.Environ(), forkServerAgentEnv+"="+t.TempDir(), "TMPDIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	var pids []int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "pids "); ok {
			for _, f := range strings.Fields(rest) {
				pid, _ := strconv.Atoi(f)
				pids = append(pids, pid)
			}
			break
		}
	}
	if len(pids) != 2 {
		t.Fatalf("the agent did not start a fork server: %v", sc.Err())
	}
	killed := time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	deadline := killed.Add(5 * time.Second)
	for i, pid := range pids {
		what := []string{"the fork server", "the process it forked ahead"}[i]
		for alive(pid) {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/wchan")
				syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("%s (%d) outlived its agent by 5 s, waiting in %s", what, pid, b)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("gone %s after the kill", time.Since(killed).Round(time.Millisecond))
}

// alive reports whether pid runs: it exists and is no zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z"
}
