package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// streamUntilStarted opens an exec stream of a long command and waits for
// its first output.
func streamUntilStarted(t *testing.T, sb *client.Sandbox) *client.ExecStream {
	t.Helper()
	st, err := sb.ExecStream(ctxT(t, 60*time.Second), "echo started; sleep 60; echo never")
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := st.Next()
		if err != nil {
			t.Fatalf("before the first output: %v", err)
		}
		if ev.Type == api.EventStdout {
			return st
		}
	}
}

// expectLost reads a stream to its end and checks it ends with an error,
// never a complete.
func expectLost(t *testing.T, st *client.ExecStream) {
	t.Helper()
	for {
		ev, err := st.Next()
		if ev.Type == api.EventComplete {
			t.Fatalf("a command whose sandbox died was reported complete: %+v", ev)
		}
		if err == io.EOF {
			t.Fatal("stream ended cleanly without an error event")
		}
		if err != nil {
			if !errors.Is(err, client.ErrUnavailable) {
				t.Logf("stream ended with %v", err)
			}
			return
		}
	}
}

func onlyKey(t *testing.T, d *testdaemon.Daemon) string {
	keys := d.Keys()
	if len(keys) != 1 {
		t.Fatalf("want exactly one sandbox key, have %v", keys)
	}
	return keys[0]
}

func TestAgentKilledFromTheHostIsNoticedAndRecovered(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("victim")
	run(t, sb, "echo precious > /workspace/f")
	st := streamUntilStarted(t, sb)
	defer st.Close()
	syscall.Kill(d.AgentPID(t, onlyKey(t, d)), syscall.SIGKILL)
	expectLost(t, st)
	info := waitStatus(t, sb, api.StatusFailed, 10*time.Second)
	if !strings.Contains(info.StatusReason, "agent") {
		t.Errorf("reason = %q", info.StatusReason)
	}
	if got := trim(run(t, sb, "cat /workspace/f")); got != "precious" {
		t.Errorf("after recovery: %q", got)
	}
}

func TestSandboxProcessesKilledFromOutsideAreRecovered(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("massacre")
	run(t, sb, "echo precious > /workspace/f; sleep 300 >/dev/null 2>&1 &")
	st := streamUntilStarted(t, sb)
	defer st.Close()
	key := onlyKey(t, d)
	killed := 0
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/*/" + key)
	dirs2, _ := filepath.Glob("/sys/fs/cgroup/*/" + key)
	for _, dir := range append(dirs, dirs2...) {
		filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Name() == "cgroup.procs" {
				data, _ := os.ReadFile(path)
				for _, f := range strings.Fields(string(data)) {
					if pid, _ := strconv.Atoi(f); pid > 0 && syscall.Kill(pid, syscall.SIGKILL) == nil {
						killed++
					}
				}
			}
			return nil
		})
	}
	if killed == 0 {
		t.Fatal("found no sandbox process to kill")
	}
	expectLost(t, st)
	if got := trim(run(t, sb, "cat /workspace/f")); got != "precious" {
		t.Errorf("after recovery: %q", got)
	}
}

// crashCase kills the daemon at a failpoint during an operation and checks
// the host and the registry after the restart.
func TestDaemonKilledMidOperation(t *testing.T) {
	for _, tc := range []struct {
		point string
		// act triggers the failpoint; want says whether the sandbox must
		// still exist afterwards.
		act         func(*client.Client) error
		wantExists  bool
		prepareSame bool
	}{
		{"create-after-record", func(c *client.Client) error { _, err := c.Sandbox("crashy").Exec(bg(), "true"); return err }, true, false},
		{"boot-after-create", func(c *client.Client) error { _, err := c.Sandbox("crashy").Exec(bg(), "true"); return err }, true, false},
		{"destroy-after-teardown", func(c *client.Client) error { return c.Sandbox("crashy").Destroy(bg()) }, false, true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			testdaemon.SkipUnlessRoot(t)
			d := testdaemon.Start(t, testdaemon.Options{Env: []string{"SANDBOXD_FAILPOINT=" + tc.point}})
			baseline := hostState(t, d)
			if tc.prepareSame {
				run(t, d.Client.Sandbox("crashy"), "echo data > /workspace/f")
			}
			noteKeys(d)
			if err := tc.act(d.Client); err == nil {
				t.Fatal("the operation succeeded; the failpoint did not fire")
			}
			noteKeys(d)
			if !d.Exited(10 * time.Second) {
				t.Fatal("the daemon did not die at the failpoint")
			}
			d.SetEnv()
			d.Start(t)
			list, err := d.Client.List(ctxT(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if exists := len(list) == 1 && list[0].ID == "crashy"; exists != tc.wantExists {
				t.Fatalf("after restart the registry holds %v; want crashy to exist: %v", list, tc.wantExists)
			}
			if tc.wantExists {
				// The half-created sandbox completes on its next call.
				if got := trim(run(t, d.Client.Sandbox("crashy"), "echo completed")); got != "completed" {
					t.Errorf("next call: %q", got)
				}
				noteKeys(d)
				if err := d.Client.Sandbox("crashy").Destroy(ctxT(t, 30*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
			if after := hostState(t, d); after != baseline {
				t.Errorf("host state leaked:\nbefore:\n%s\nafter:\n%s", baseline, after)
			}
		})
	}
}

func TestDaemonKilledMidExecKeepsFilesAndReattaches(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("mid-exec")
	run(t, sb, "echo written-before > /workspace/f && sync")
	st := streamUntilStarted(t, sb)
	d.Kill(t)
	expectLost(t, st)
	st.Close()
	d.Start(t)
	info, err := sb.Info(ctxT(t, 10*time.Second))
	if err != nil || info.Status != api.StatusRunning {
		t.Fatalf("after restart: %s, %v (want the container reattached)", statusOf(info), err)
	}
	if got := trim(run(t, sb, "cat /workspace/f")); got != "written-before" {
		t.Errorf("files after kill -9 mid-exec: %q", got)
	}
}

// bg is a context for calls whose daemon is about to die.
func bg() context.Context {
	ctx, _ := contextWithTimeout(30 * time.Second) //nolint:govet // ends with the test process
	return ctx
}

// TestAgentExitStatusIsLogged: when a sandbox's agent dies, the daemon
// says how (an agent once exited twice without a line in any log).
func TestAgentExitStatusIsLogged(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("logged-death")
	run(t, sb, "true")
	syscall.Kill(d.AgentPID(t, onlyKey(t, d)), syscall.SIGKILL)
	waitStatus(t, sb, api.StatusFailed, 30*time.Second)
	if !strings.Contains(d.Logs(), `status="killed by signal 9 (SIGKILL)"`) {
		t.Errorf("the daemon did not log the agent's exit status:\n%s", d.Logs())
	}
}

// TestDaemonKilledAfterAPoolTakeKeepsItsSandbox: a pool take's row goes
// to the registry's journal before the first call's answer and into
// SQLite after it (store.Store.InsertAhead). A daemon killed between the
// two knows the sandbox after its restart, with its name, configuration
// and UID range, and gives that range to no other sandbox. (A take for a
// call has no labels: a create that brings labels is a POST, which
// answers after SQLite's insert.)
func TestDaemonKilledAfterAPoolTakeKeepsItsSandbox(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	for _, rt := range runtimes(t) {
		t.Run(rt, func(t *testing.T) {
			args := []string{"--warm-pool", "1"}
			if rt == "gvisor" {
				args = append(args, "--default-runtime", "gvisor")
			}
			d := testdaemon.Start(t, testdaemon.Options{Args: args, Env: []string{"SANDBOXD_FAILPOINT=take-before-insert"}})
			waitWarm(t, d, 1)
			// The daemon dies as the call's answer is let go: the caller
			// may or may not have it.
			d.Client.Sandbox("taken").Exec(bg(), "true")
			if !d.Exited(10 * time.Second) {
				t.Fatal("the daemon did not die at the failpoint")
			}
			d.SetEnv()
			d.Start(t)
			sb := d.Client.Sandbox("taken")
			info, err := sb.Info(ctxT(t, 10*time.Second))
			if err != nil || info.Status != api.StatusRunning {
				t.Fatalf("after the restart: %s, %v (want the taken sandbox running)", statusOf(info), err)
			}
			if (info.Runtime == "gvisor") != (rt == "gvisor") || info.Limits.MemoryBytes == 0 {
				t.Errorf("configuration after the restart: runtime %q on %s, limits %+v", info.Runtime, rt, info.Limits)
			}
			if got := trim(run(t, sb, "hostname; cat /etc/hostname; grep -c taken /etc/hosts")); got != "taken\ntaken\n1" {
				t.Errorf("the taken sandbox's name after the restart: %q", got)
			}
			if rt == "gvisor" {
				return // no user namespace of the host's
			}
			mine := trim(run(t, sb, "cat /proc/self/uid_map"))
			other := trim(run(t, d.Client.Sandbox("other"), "cat /proc/self/uid_map"))
			if mine == other || !strings.HasPrefix(mine, "0 ") {
				t.Errorf("UID maps: the taken sandbox's %q, a new one's %q (want two ranges)", mine, other)
			}
		})
	}
}
