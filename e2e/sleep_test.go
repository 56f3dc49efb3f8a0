package e2e

import (
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// fastIdle is a daemon that looks for idle sandboxes every 100 ms, so
// sleep tests take seconds.
func fastIdle(t *testing.T, args ...string) *testdaemon.Daemon {
	testdaemon.SkipUnlessRoot(t)
	return testdaemon.Start(t, testdaemon.Options{Args: append([]string{"--idle-check", "100ms"}, args...)})
}

// waitStatus polls the sandbox's status until it is want or limit passes.
func waitStatus(t *testing.T, sb *client.Sandbox, want api.SandboxStatus, limit time.Duration) *api.Sandbox {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		info, err := sb.Info(ctxT(t, 10*time.Second))
		if err == nil && info.Status == want {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: status %v (err %v) after %v, want %s", sb.ID(), statusOf(info), err, limit, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func statusOf(info *api.Sandbox) string {
	if info == nil {
		return "?"
	}
	return string(info.Status) + " (" + info.StatusReason + ")"
}

func TestIdleSandboxSleepsAtItsDeadlineAndWakesOnACall(t *testing.T) {
	d := fastIdle(t)
	events, err := d.Client.Events(ctxT(t, time.Minute), "napper")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	sb := d.Client.Sandbox("napper", client.WithSleepAfter(time.Second), client.WithEnv(map[string]string{"SANDBOX_VAR": "from-create"}))
	run(t, sb, "echo kept > /workspace/file")
	used := time.Now()
	info := waitStatus(t, sb, api.StatusSleeping, 10*time.Second)
	if slept := info.StatusChangedAt.Sub(used); slept < 900*time.Millisecond || slept > 3*time.Second {
		t.Errorf("slept %v after the last call, want about 1s", slept)
	}
	if info.IdleDeadline != nil {
		t.Errorf("a sleeping sandbox has an idle deadline: %v", info.IdleDeadline)
	}
	if n := agentProcesses(t, d); n != 0 {
		t.Errorf("%d agent processes remain while the sandbox sleeps", n)
	}
	start := time.Now()
	if got := trim(run(t, sb, "cat /workspace/file; echo $SANDBOX_VAR")); got != "kept\nfrom-create" {
		t.Errorf("after wake: %q", got)
	}
	t.Logf("wake + exec took %v", time.Since(start))
	info = waitStatus(t, sb, api.StatusRunning, time.Second)
	if info.IdleDeadline == nil {
		t.Error("a running sandbox has no idle deadline")
	}
	var types []string
	for len(types) < 5 {
		ev, err := events.Next()
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, ev.Type)
	}
	if got := strings.Join(types, ","); got != "created,started,slept,woke" && !strings.HasPrefix(got, "created,started,slept,woke") {
		t.Errorf("events = %s", got)
	}
}

// agentProcesses counts the sandbox agents running on the host below this
// daemon's run directory.
func agentProcesses(t *testing.T, d *testdaemon.Daemon) int {
	out, _ := exec.Command("pgrep", "-f", "/.sandboxd/agent --socket").Output()
	n := 0
	for _, pid := range strings.Fields(string(out)) {
		cg, _ := exec.Command("cat", "/proc/"+pid+"/cgroup").Output()
		for _, k := range d.Keys() {
			if strings.Contains(string(cg), k) {
				n++
			}
		}
	}
	return n
}

func TestOpenStreamKeepsASandboxAwake(t *testing.T) {
	d := fastIdle(t)
	sb := d.Client.Sandbox("streaming", client.WithSleepAfter(time.Second))
	run(t, sb, "true")
	res, err := sb.Exec(ctxT(t, 30*time.Second), "sleep 3; echo finished", client.WithCallbacks(client.Callbacks{}))
	if err != nil || trim(res.Stdout) != "finished" {
		t.Fatalf("a 3 s stream on a sandbox with sleepAfter 1s: %+v, %v", res, err)
	}
	if info, _ := sb.Info(ctxT(t, 10*time.Second)); info.Status != api.StatusRunning {
		t.Errorf("status right after the stream = %s", statusOf(info))
	}
}

func TestKeepAliveNeverSleeps(t *testing.T) {
	d := fastIdle(t)
	sb := d.Client.Sandbox("insomniac", client.WithSleepAfter(time.Second), client.WithKeepAlive(true))
	run(t, sb, "true")
	time.Sleep(2500 * time.Millisecond)
	info, err := sb.Info(ctxT(t, 10*time.Second))
	if err != nil || info.Status != api.StatusRunning || !info.KeepAlive {
		t.Fatalf("keepAlive sandbox after 2.5s idle: %s, %v", statusOf(info), err)
	}
	off := false
	if _, err := sb.Update(ctxT(t, 10*time.Second), nil, &off); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, sb, api.StatusSleeping, 10*time.Second)
}

func TestStopStartRestartRenew(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("controlled")
		run(t, sb, "echo persisted > /workspace/f")
		info, err := sb.Stop(ctxT(t, 30*time.Second))
		if err != nil || info.Status != api.StatusStopped {
			t.Fatalf("stop: %s, %v", statusOf(info), err)
		}
		// Any call starts it again, exactly as a wake.
		if got := trim(run(t, sb, "cat /workspace/f")); got != "persisted" {
			t.Errorf("after stop and a call: %q", got)
		}
		run(t, sb, "sleep 300 >/dev/null 2>&1 &")
		if info, err = sb.Restart(ctxT(t, 30*time.Second)); err != nil || info.Status != api.StatusRunning {
			t.Fatalf("restart: %s, %v", statusOf(info), err)
		}
		if got := trim(run(t, sb, "cat /workspace/f; pgrep -c -x sleep || true")); got != "persisted\n0" {
			t.Errorf("after restart: %q (want the file, and no process from before)", got)
		}
		if _, err := sb.Stop(ctxT(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
		if info, err = sb.Start(ctxT(t, 30*time.Second)); err != nil || info.Status != api.StatusRunning {
			t.Fatalf("start: %s, %v", statusOf(info), err)
		}
		before := *info.IdleDeadline
		time.Sleep(20 * time.Millisecond)
		if info, err = sb.Renew(ctxT(t, 10*time.Second)); err != nil || !info.IdleDeadline.After(before) {
			t.Errorf("renew did not move the idle deadline: %v -> %v (%v)", before, info.IdleDeadline, err)
		}
		for _, verb := range []string{"stop", "start", "restart", "renew"} {
			_, err := lifecycleVerb(d.Client.Sandbox("never-made"), verb)
			if !errors.Is(err, client.ErrNotFound) {
				t.Errorf("%s on an unknown sandbox = %v, want ErrNotFound", verb, err)
			}
		}
	})
}

func lifecycleVerb(sb *client.Sandbox, verb string) (*api.Sandbox, error) {
	ctx, cancel := contextWithTimeout(10 * time.Second)
	defer cancel()
	switch verb {
	case "stop":
		return sb.Stop(ctx)
	case "start":
		return sb.Start(ctx)
	case "restart":
		return sb.Restart(ctx)
	}
	return sb.Renew(ctx)
}

func TestCapacityPutsTheLeastRecentlyUsedToSleepOrRefuses(t *testing.T) {
	d := fastIdle(t, "--memory-budget", "300Mi", "--default-memory", "128Mi")
	small := client.WithLimits(api.Limits{MemoryBytes: 128 << 20})
	a, b, c := d.Client.Sandbox("cap-a", small), d.Client.Sandbox("cap-b", small), d.Client.Sandbox("cap-c", small)
	run(t, a, "true")
	run(t, b, "true")
	// Full (256 of 300 MiB): c needs room; a is the least recently used.
	run(t, c, "true")
	if info, _ := a.Info(ctxT(t, 10*time.Second)); info.Status != api.StatusSleeping {
		t.Errorf("cap-a = %s, want sleeping to make room", statusOf(info))
	}
	if info, _ := b.Info(ctxT(t, 10*time.Second)); info.Status != api.StatusRunning {
		t.Errorf("cap-b = %s, want running", statusOf(info))
	}
	// Keep b and c busy with open streams: nothing can sleep, so a's wake
	// is refused with CAPACITY_EXCEEDED and a Retry-After.
	for _, sb := range []*client.Sandbox{b, c} {
		st, err := sb.ExecStream(ctxT(t, 30*time.Second), "sleep 5")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
	}
	time.Sleep(300 * time.Millisecond)
	req, _ := http.NewRequest("POST", d.URL+"/v1/sandboxes/cap-a/exec", strings.NewReader(`{"command":"true"}`))
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), string(api.CodeCapacityExceeded)) {
		t.Errorf("wake over capacity: %d %s", resp.StatusCode, body)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra <= 0 {
		t.Errorf("Retry-After = %q", resp.Header.Get("Retry-After"))
	}
}

func TestInstanceTypesAndDiskQuota(t *testing.T) {
	d := daemon(t)
	lite := d.Client.Sandbox("lite-one", client.WithInstanceType("lite"))
	info, err := lite.Ensure(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if info.Limits.MemoryBytes != 256<<20 || info.Limits.MilliCPU != 250 || info.Limits.Pids != 256 || info.Limits.DiskBytes != 2<<30 {
		t.Errorf("lite limits = %+v", info.Limits)
	}
	tiny := d.Client.Sandbox("tiny-disk", client.WithLimits(api.Limits{DiskBytes: 64 << 20}))
	res, err := tiny.Exec(ctxT(t, 60*time.Second), "head -c 100000000 /dev/zero > /workspace/big; echo exit=$?; df -m /workspace | tail -1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Stdout, "exit=1") || !strings.Contains(res.Stderr, "No space left") {
		t.Errorf("writing 100 MB into a 64 MiB disk: %+v", res)
	}
	// The sandbox still works (and can free space), and the host's disk
	// was never the one that filled.
	run(t, tiny, "rm /workspace/big && echo ok > /workspace/small")
	if err := tiny.Destroy(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Only lite-one (2 GiB preset quota) may keep a loop device.
	waitForLoopDevices(t, d, 1, "lite-one's")
	if err := lite.Destroy(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitForLoopDevices(t, d, 0, "none outlives its sandbox")
}

// waitForLoopDevices waits until want loop devices back files of d's state
// directory. A loop device goes once no mount namespace holds its
// filesystem: namespaces that other programs on the host create while a
// sandbox's disk is mounted (other tests do) copy the mount and may hold
// it a moment longer than the sandbox itself (tiny-disk's was still there
// right after its destroy once, at load 37). A device that never goes
// stays past the bound.
func waitForLoopDevices(t *testing.T, d *testdaemon.Daemon, want int, why string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := exec.Command("losetup", "-a").Output()
		n := strings.Count(string(out), d.StateDir)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d loop devices of this daemon, want %d (%s):\n%s", n, want, why, out)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestMetricsAndEvents(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("measured")
	run(t, sb, "true")
	sb.Exec(ctxT(t, 10*time.Second), "false")
	sb.Exec(ctxT(t, 10*time.Second), "sleep 1", client.WithTimeout(10*time.Millisecond))
	req, _ := http.NewRequest("GET", d.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`sandboxd_sandboxes{status="running"} 1`,
		`sandboxd_exec_total{kind="buffered"} 3`,
		`sandboxd_errors_total{code="COMMAND_TIMEOUT"} 1`,
		`sandboxd_sandbox_starts_total 1`,
		`sandboxd_sandbox_start_seconds_count 1`,
		`sandboxd_exec_seconds_bucket{le="+Inf"} 3`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

func TestRunningProcessKeepsASandboxAwake(t *testing.T) {
	d := fastIdle(t)
	sb := d.Client.Sandbox("worker", client.WithSleepAfter(time.Second))
	if _, err := sb.StartProcess(ctxT(t, 30*time.Second), "sleep 2.5", client.WithProcessID("job")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if info, _ := sb.Info(ctxT(t, 10*time.Second)); info.Status != api.StatusRunning {
		t.Fatalf("with a process running and sleepAfter 1s: %s", statusOf(info))
	}
	// Once it ends, the sandbox goes to sleep.
	waitStatus(t, sb, api.StatusSleeping, 10*time.Second)
}

func TestWakeRestoresSessionsAndEnvButNotProcesses(t *testing.T) {
	d := fastIdle(t)
	sb := d.Client.Sandbox("restorer", client.WithSleepAfter(time.Second))
	ctx := ctxT(t, 60*time.Second)
	if err := sb.SetEnvVars(ctx, map[string]string{"SANDBOX_LEVEL": "sb"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.CreateSession(ctx, client.WithSessionID("build"), client.WithEnv(map[string]string{"SESSION_LEVEL": "s"}), client.WithCwd("/tmp")); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.StartProcess(ctx, "sleep 300", client.WithProcessID("long")); err != nil {
		t.Fatal(err)
	}
	// A running process keeps it awake; stopping it on request kills it.
	if _, err := sb.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := sb.Exec(ctx, "pwd; echo $SANDBOX_LEVEL $SESSION_LEVEL", client.InSession("build"))
	if err != nil || trim(res.Stdout) != "/tmp\nsb s" {
		t.Errorf("named session after stop and wake: %+v, %v", res, err)
	}
	p, err := sb.GetProcess(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != api.ProcessKilled || p.StatusReason != "stopped" {
		t.Errorf("process record after the stop: %s (%s), want killed (stopped)", p.Status, p.StatusReason)
	}
}

// TestWakeOnFileReadAndPreviewWithPortsIntact: a sleeping sandbox wakes
// on a file read and on a preview request; its files, env and exposed
// ports (URL and token) are as they were.
func TestWakeOnFileReadAndPreviewWithPortsIntact(t *testing.T) {
	d := fastIdle(t)
	sb := d.Client.Sandbox("wakeful", client.WithSleepAfter(time.Second), client.WithEnv(map[string]string{"KEEP": "env"}))
	ctx := ctxT(t, 2*time.Minute)
	if _, err := sb.WriteFile(ctx, "/workspace/note.txt", []byte("written before sleep")); err != nil {
		t.Fatal(err)
	}
	// Only the port's record is made now: services are processes, which do
	// not survive a sleep; the record, URL and token do.
	p, err := sb.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}

	waitStatus(t, sb, api.StatusSleeping, 10*time.Second)
	f, err := sb.ReadFile(ctx, "/workspace/note.txt")
	if err != nil || string(f.Content) != "written before sleep" {
		t.Fatalf("file read waking the sandbox: %v %+v", err, f)
	}
	if info, _ := sb.Info(ctx); info.Status != api.StatusRunning {
		t.Errorf("after the file read: %s", statusOf(info))
	}
	if got := trim(run(t, sb, "echo $KEEP")); got != "env" {
		t.Errorf("env after waking: %q", got)
	}
	ports, err := sb.ExposedPorts(ctx)
	if err != nil || len(ports) != 1 || ports[0].URL != p.URL || ports[0].Token != p.Token {
		t.Errorf("exposed ports after waking: %+v (%v), want %+v", ports, err, p)
	}

	// Asleep again, a preview request wakes it; with a server started on
	// the port, the same URL answers.
	waitStatus(t, sb, api.StatusSleeping, 10*time.Second)
	c := previewClient(d)
	if status, body, _ := get(t, c, p.URL, nil); status != 502 || errorCode(body) != api.CodeServiceNotResponding {
		t.Errorf("preview of a sleeping sandbox without its server: %d %s", status, body)
	}
	if info, _ := sb.Info(ctx); info.Status != api.StatusRunning {
		t.Errorf("after the preview request: %s", statusOf(info))
	}
	testdaemon.StartTestServer(t, sb, "0.0.0.0:8080")
	if status, _, _ := get(t, c, p.URL, nil); status != 200 {
		t.Errorf("preview after waking and starting the server: %d", status)
	}
}
