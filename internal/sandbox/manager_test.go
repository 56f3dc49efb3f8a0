package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
)

var bg = context.Background()

func TestLifecycleCreateStopStartDestroy(t *testing.T) {
	h := newHarness(t, nil)
	inf, created, err := h.m.Ensure(bg, "a", Config{})
	if err != nil || !created || inf.Status != StatusRunning {
		t.Fatalf("Ensure = %+v, created %v, %v; want a created running sandbox", inf, created, err)
	}
	key := h.keyOf("a")
	if got := h.row("a").Status; got != string(StatusRunning) {
		t.Errorf("registry status %q, want running", got)
	}
	if !h.net.isAttached(key) || h.rt.live() != 1 {
		t.Errorf("network attached %v, containers %d; want attached and 1", h.net.isAttached(key), h.rt.live())
	}
	if _, created, _ := h.m.Ensure(bg, "a", Config{}); created {
		t.Error("a second Ensure created the sandbox again")
	}

	if inf, err := h.m.Stop(bg, "a"); err != nil || inf.Status != StatusStopped {
		t.Fatalf("Stop = %s, %v; want stopped", inf.Status, err)
	}
	if h.rt.live() != 0 || h.net.isAttached(key) {
		t.Errorf("after stop: %d containers, network attached %v", h.rt.live(), h.net.isAttached(key))
	}
	if got := h.row("a"); got.Status != string(StatusStopped) || got.StatusReason != "stopped by request" {
		t.Errorf("registry after stop: %q %q", got.Status, got.StatusReason)
	}

	lease, err := h.m.Acquire(bg, "a") // any call starts it again
	if err != nil {
		t.Fatalf("Acquire a stopped sandbox: %v", err)
	}
	lease.Release()
	if inf, _ := h.m.Get(bg, "a"); inf.Status != StatusRunning {
		t.Errorf("after a call: %s, want running", inf.Status)
	}

	if err := h.m.Destroy(bg, "a"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := h.m.Get(bg, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after destroy: %v, want ErrNotFound", err)
	}
	if _, err := h.reg.Registry.Get(bg, "a"); err == nil {
		t.Error("registry row survived destroy")
	}
	if _, err := os.Stat(h.m.paths(key).dir); !os.IsNotExist(err) {
		t.Errorf("state directory survived destroy: %v", err)
	}
	if h.rt.live() != 0 || h.net.isAttached(key) {
		t.Errorf("after destroy: %d containers, network attached %v", h.rt.live(), h.net.isAttached(key))
	}
	want := []string{EventCreated, EventStarted, EventStopped, EventWoke, EventDestroyed}
	if diff := cmp.Diff(want, h.nextEvents()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestStopKeepsAFailedSandboxFailed: stopping a sandbox that runs nothing
// because it failed must not hide the failure behind "stopped".
func TestStopKeepsAFailedSandboxFailed(t *testing.T) {
	h := newHarness(t, nil)
	h.rt.failCreates(errors.New("no container for you"))
	_, _, err := h.m.Ensure(bg, "a", Config{})
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("Ensure with a failing runtime: %v, want ErrFailed", err)
	}
	before := h.row("a")
	if before.Status != string(StatusFailed) {
		t.Fatalf("status %q, want failed", before.Status)
	}
	inf, err := h.m.Stop(bg, "a")
	if err != nil || inf.Status != StatusFailed || inf.StatusReason != before.StatusReason {
		t.Errorf("Stop of a failed sandbox = %s %q, %v; want failed with its reason kept", inf.Status, inf.StatusReason, err)
	}
	if got := h.row("a"); got.Status != string(StatusFailed) {
		t.Errorf("registry after stop: %q, want failed", got.Status)
	}
	h.rt.failCreates(nil)
	if inf := h.ensure("a", Config{}); inf.Status != StatusRunning {
		t.Errorf("the next call: %s, want running", inf.Status)
	}
}

// TestAFailedCreateLeavesNoContainer: a create that fails after the
// runtime made part of the container (crun killed part way, a daemon
// stopping while its pool starts a sandbox) is undone like any later step:
// the runtime holds nothing of it afterwards.
func TestAFailedCreateLeavesNoContainer(t *testing.T) {
	h := newHarness(t, nil)
	h.rt.mu.Lock()
	h.rt.failCreate, h.rt.halfCreate = errors.New("crun create: signal: killed"), true
	h.rt.mu.Unlock()
	if _, _, err := h.m.Ensure(bg, "a", Config{}); !errors.Is(err, ErrFailed) {
		t.Fatalf("Ensure with a create that fails part way: %v, want ErrFailed", err)
	}
	if n := h.rt.count(); n != 0 {
		t.Errorf("the runtime holds %d containers after the failed start, want 0", n)
	}
}

// TestRegistryFailureChangesNothing: a status the registry could not
// record is not shown in memory or announced; the sandbox recovers on the
// next call once the registry works again.
func TestRegistryFailureChangesNothing(t *testing.T) {
	h := newHarness(t, nil)
	h.ensure("a", Config{})
	h.nextEvents()
	h.reg.fail(&h.reg.failStatus, true)
	if _, err := h.m.Stop(bg, "a"); !errors.Is(err, errInjected) {
		t.Fatalf("Stop with a failing registry: %v, want the registry's error", err)
	}
	if inf, _ := h.m.Get(bg, "a"); inf.Status != StatusRunning {
		t.Errorf("memory says %s after a failed write, want running (as the registry)", inf.Status)
	}
	if got := h.row("a").Status; got != string(StatusRunning) {
		t.Errorf("registry says %q", got)
	}
	if evs := h.nextEvents(); len(evs) != 0 {
		t.Errorf("events published for an unrecorded change: %v", evs)
	}
	h.reg.fail(&h.reg.failStatus, false)
	lease, err := h.m.Acquire(bg, "a")
	if err != nil {
		t.Fatalf("Acquire once the registry works: %v", err)
	}
	lease.Release()
	if got := h.row("a").Status; got != string(StatusRunning) {
		t.Errorf("registry after the restart: %q, want running", got)
	}
	if h.rt.live() != 1 {
		t.Errorf("%d containers run, want 1", h.rt.live())
	}
	want := []string{EventFailed, EventStarted}
	if diff := cmp.Diff(want, h.nextEvents()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestHalfDestroyedSandboxIsNotStartedAgain: a destroy that failed after
// recording "destroying" leaves a sandbox that refuses to start and is
// finished by the next destroy.
func TestHalfDestroyedSandboxIsNotStartedAgain(t *testing.T) {
	h := newHarness(t, nil)
	h.ensure("a", Config{})
	h.reg.fail(&h.reg.failDelet, true)
	if err := h.m.Destroy(bg, "a"); err == nil {
		t.Fatal("Destroy succeeded with a failing registry")
	}
	if _, err := h.m.Acquire(bg, "a"); !errors.Is(err, ErrConflict) {
		t.Errorf("Acquire of a half-destroyed sandbox: %v, want ErrConflict", err)
	}
	if _, err := h.m.Stop(bg, "a"); !errors.Is(err, ErrConflict) {
		t.Errorf("Stop of a half-destroyed sandbox: %v, want ErrConflict", err)
	}
	if h.rt.live() != 0 {
		t.Errorf("%d containers run", h.rt.live())
	}
	h.reg.fail(&h.reg.failDelet, false)
	if err := h.m.Destroy(bg, "a"); err != nil {
		t.Fatalf("second Destroy: %v", err)
	}
	if _, err := h.m.Get(bg, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after destroy: %v", err)
	}
}

func TestAgentDeathMarksFailedAndTheNextCallRestarts(t *testing.T) {
	h := newHarness(t, nil)
	h.ensure("a", Config{})
	pid := h.pidOf("a")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ev := h.waitEvent("a", EventFailed)
	if ev.Status != StatusFailed {
		t.Errorf("failed event carries status %s", ev.Status)
	}
	if got := h.row("a").Status; got != string(StatusFailed) {
		t.Errorf("registry: %q, want failed", got)
	}
	lease, err := h.m.Acquire(bg, "a")
	if err != nil {
		t.Fatalf("Acquire after the agent died: %v", err)
	}
	lease.Release()
	if h.pidOf("a") == pid {
		t.Error("the dead container was not replaced")
	}
}

func TestIdleSandboxSleepsUnlessUsedBusyOrKeptAlive(t *testing.T) {
	h := newHarness(t, nil)
	keep := true
	h.ensure("idle", Config{SleepAfter: time.Second})
	h.ensure("leased", Config{SleepAfter: time.Second})
	h.ensure("busy", Config{SleepAfter: time.Second})
	h.ensure("kept", Config{SleepAfter: time.Second, KeepAlive: keep})
	h.ensure("fresh", Config{SleepAfter: time.Hour})
	lease, err := h.m.Acquire(bg, "leased")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	busyBundle := h.m.paths(h.keyOf("busy")).bundle
	if err := os.WriteFile(filepath.Join(busyBundle, "busy"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	h.clock.Advance(2 * time.Second)
	h.m.sleepIdle(bg)
	want := map[string]Status{"idle": StatusSleeping, "leased": StatusRunning, "busy": StatusRunning,
		"kept": StatusRunning, "fresh": StatusRunning}
	for id, status := range want {
		if inf, _ := h.m.Get(bg, id); inf.Status != status {
			t.Errorf("%s: %s, want %s", id, inf.Status, status)
		}
	}
	if got := h.row("idle"); got.Status != string(StatusSleeping) || got.StatusReason != "idle for 1s" {
		t.Errorf("registry of idle: %q %q", got.Status, got.StatusReason)
	}
	// A busy agent counts as a use: the sandbox's idle time starts again.
	if inf, _ := h.m.Get(bg, "busy"); !inf.LastUsedAt.Equal(h.clock.Now()) {
		t.Errorf("busy sandbox last used %s, want now (%s)", inf.LastUsedAt, h.clock.Now())
	}
}

func TestCapacityPutsTheLeastRecentlyUsedToSleepOrRefuses(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.Capacity.MaxRunning = 2 })
	h.ensure("old", Config{})
	h.clock.Advance(time.Second)
	h.ensure("new", Config{})
	h.clock.Advance(time.Second)
	h.ensure("third", Config{})
	if inf, _ := h.m.Get(bg, "old"); inf.Status != StatusSleeping {
		t.Errorf("least recently used: %s, want sleeping", inf.Status)
	}
	if inf, _ := h.m.Get(bg, "new"); inf.Status != StatusRunning {
		t.Errorf("more recently used: %s, want running", inf.Status)
	}
	// Both running sandboxes in use: no room, and nothing is put to sleep.
	for _, id := range []string{"new", "third"} {
		lease, err := h.m.Acquire(bg, id)
		if err != nil {
			t.Fatal(err)
		}
		defer lease.Release()
	}
	if _, err := h.m.Acquire(bg, "old"); !errors.Is(err, ErrCapacity) {
		t.Errorf("Acquire on a full host: %v, want ErrCapacity", err)
	}
	if h.rt.live() != 2 {
		t.Errorf("%d containers run, want 2", h.rt.live())
	}
}

func TestWarmPoolHandsOutAStartedSandbox(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	h.m.fillPool(bg)
	if n := h.rt.creates(); n != 1 {
		t.Fatalf("%d containers created for the pool, want 1", n)
	}
	inf := h.ensure("named", Config{})
	if inf.Status != StatusRunning || h.rt.creates() != 1 {
		t.Fatalf("Ensure from the pool: %s with %d creates; want running, no new container", inf.Status, h.rt.creates())
	}
	pid := h.pidOf("named")
	if got := h.mounts.hostname(pid); got != "named" {
		t.Errorf("hostname of the adopted container: %q", got)
	}
	root := h.m.paths(h.keyOf("named")).rootfs
	if data, err := os.ReadFile(filepath.Join(root, "etc", "hostname")); err != nil || string(data) != "named\n" {
		t.Errorf("/etc/hostname: %q, %v", data, err)
	}
	want := []string{EventCreated, EventStarted}
	if diff := cmp.Diff(want, h.nextEvents()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	// Labels do not keep a create out of the pool; they are the new
	// sandbox's, not the pool's.
	warm := h.waitWarm()
	labelled := h.ensure("labelled", Config{Labels: map[string]string{"team": "a"}})
	if h.keyOf("labelled") != warm || labelled.Config.Labels["team"] != "a" {
		t.Errorf("a labelled create: key %s (pool's %s), labels %v", h.keyOf("labelled"), warm, labelled.Config.Labels)
	}
	if rec, err := h.m.opts.Store.Get(bg, "labelled"); err != nil || !strings.Contains(string(rec.Config), `"team":"a"`) {
		t.Errorf("registry row of the labelled sandbox: %s, %v", rec.Config, err)
	}
	// A configuration other than the default never takes a pool sandbox.
	warm = h.waitWarm()
	h.ensure("custom", Config{Env: map[string]string{"A": "1"}})
	if h.keyOf("custom") == warm {
		t.Error("a custom sandbox took the pool sandbox")
	}
	if got := h.waitWarm(); got != warm {
		t.Errorf("the pool holds %s, want %s still", got, warm)
	}
}

// A warm sandbox's UTS namespace and /etc files are opened while it
// waits, so that its take only writes; they are closed once it is named,
// or with the sandbox if it is never taken. A file that cannot be written
// in place (a link) leaves the take to open and replace it.
func TestWarmPoolNamesWithWhatItOpenedAhead(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	warm := h.waitWarm()
	pid := h.warmPID(warm)
	if opened, open := h.mounts.uts(pid); opened != 1 || open != 1 {
		t.Fatalf("while it waits: its UTS namespace opened %d times, %d open; want 1, 1", opened, open)
	}
	h.ensure("named", Config{})
	if opened, open := h.mounts.uts(pid); opened != 1 || open != 0 {
		t.Errorf("after the take: its UTS namespace opened %d times, %d open; want 1, 0", opened, open)
	}
	if got := h.mounts.hostname(pid); got != "named" {
		t.Errorf("hostname %q, want named", got)
	}
	root := h.m.paths(warm).rootfs
	for file, want := range map[string]string{"hostname": "named\n", "hosts": hostsFile("named")} {
		if b, err := os.ReadFile(filepath.Join(root, "etc", file)); err != nil || string(b) != want {
			t.Errorf("/etc/%s: %q, %v; want %q", file, b, err, want)
		}
	}

	// Never taken: closed with the sandbox.
	warm = h.waitWarm()
	pid = h.warmPID(warm)
	h.m.Close()
	if opened, open := h.mounts.uts(pid); opened != 1 || open != 0 {
		t.Errorf("a pool sandbox torn down: its UTS namespace opened %d times, %d open; want 1, 0", opened, open)
	}
}

// A warm sandbox's /etc file that is not a regular file of its own (a
// hard link: writing it would write the other name too) is not opened
// ahead: the take then replaces it (rewriteRootFiles).
func TestWarmNamingOpensNoLink(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("warm\n"), 0o644)
	os.WriteFile(filepath.Join(root, "secret"), []byte("keep\n"), 0o644)
	if err := os.Link(filepath.Join(root, "secret"), filepath.Join(root, "etc", "hosts")); err != nil {
		t.Fatal(err)
	}
	n := &warmNaming{uts: &fakeUTS{f: &fakeMounts{utsOpen: map[int]int{}}}}
	err := n.openFiles(root)
	n.close()
	if err == nil {
		t.Fatal("a hard-linked /etc/hosts was opened to be written in place")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "secret")); string(b) != "keep\n" {
		t.Errorf("the other name of /etc/hosts: %q", b)
	}
}

// A take writes the registry row beside the naming. When the naming fails,
// the row it wrote is deleted and the create goes on as a cold start under
// a row of its own; if that row cannot be deleted, the create fails like
// any other, recorded as failed.
func TestWarmPoolTakeWhoseNamingFails(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	h.m.fillPool(bg)
	warm := h.waitWarm()
	h.mounts.mu.Lock()
	h.mounts.failHostname = errors.New("injected hostname failure")
	h.mounts.mu.Unlock()
	inf := h.ensure("named", Config{})
	if inf.Status != StatusRunning || h.keyOf("named") == warm || h.row("named").Key != h.keyOf("named") {
		t.Fatalf("after a failed take: %s, key %s (pool's %s), row key %s; want a cold start under its own row",
			inf.Status, h.keyOf("named"), warm, h.row("named").Key)
	}
	if h.rt.runsIn(warm) {
		t.Error("the pool sandbox whose naming failed still runs")
	}
	if _, err := os.Stat(h.m.paths(warm).dir); !os.IsNotExist(err) {
		t.Errorf("the files of the pool sandbox whose naming failed: %v", err)
	}

	h.m.pool.mu.Lock()
	h.m.pool.lastTake = time.Time{} // no burst: refill now
	h.m.pool.mu.Unlock()
	h.waitWarm()
	h.reg.fail(&h.reg.failDelet, true)
	if _, _, err := h.m.Ensure(bg, "other", Config{}); err == nil {
		t.Fatal("Ensure succeeded with the naming and the deletion of its row failing")
	}
	if row := h.row("other"); row.Status != string(StatusFailed) {
		t.Errorf("row of the failed take: %q, want failed", row.Status)
	}
}

// A take for a call hands out its lease before the registry row is
// written, carrying the name for the agent; the row is durable (written
// ahead) by the time Settle returns, inserted after it, and only then is
// the sandbox published. The name goes with every call until one is
// answered.
func TestWarmPoolTakeForACall(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	h.m.fillPool(bg)
	warm := h.waitWarm()
	h.nextEvents()
	lease, err := h.m.AcquireForCall(bg, "named")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	if got := lease.AgentName(); got != "named" {
		t.Errorf("AgentName = %q, want the new name", got)
	}
	if !h.mounts.gave("named") {
		t.Error("no hostname set when the lease is handed out; it must be set before the call runs")
	}
	req, _ := http.NewRequest("POST", "http://agent/exec", strings.NewReader(`{"command":"true"}`))
	req.Header.Set(agentapi.NameHeader, lease.AgentName())
	resp, err := lease.Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	var res api.ExecResult
	json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if res.Stdout != "named" {
		t.Errorf("the agent got the name %q", res.Stdout)
	}
	if err := lease.Settle(bg); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	h.m.settles.Wait() // the row's insert, after the answer
	lease.AgentNamed("named")
	if got := lease.AgentName(); got != "" {
		t.Errorf("AgentName after an answered call = %q, want none", got)
	}
	if row := h.row("named"); row.Key != warm || row.Status != string(StatusRunning) {
		t.Errorf("row: key %s status %s; want the pool's %s, running", row.Key, row.Status, warm)
	}
	if diff := cmp.Diff([]string{EventCreated, EventStarted}, h.nextEvents()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if inf := h.ensure("named", Config{}); inf.Status != StatusRunning || h.rt.creates() != 1 {
		t.Errorf("after the take: %s with %d creates", inf.Status, h.rt.creates())
	}
}

// A take for a call whose registry row cannot be written fails after its
// lease was handed out: Settle returns the error, the pool sandbox is
// torn down (with whatever the call started in it), nothing is recorded
// or published, and the ID is free for the next call.
func TestWarmPoolTakeForACallWhoseRowFails(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	h.m.fillPool(bg)
	warm := h.waitWarm()
	h.nextEvents()
	h.reg.fail(&h.reg.failInsert, true)
	lease, err := h.m.AcquireForCall(bg, "named")
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Settle(bg); !errors.Is(err, errInjected) {
		t.Fatalf("Settle = %v, want the registry's error", err)
	}
	lease.Release()
	if h.rt.runsIn(warm) {
		t.Error("the pool sandbox whose row could not be written still runs")
	}
	if _, err := h.m.Get(bg, "named"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the failed take: %v, want ErrNotFound", err)
	}
	if evs := h.nextEvents(); len(evs) != 0 {
		t.Errorf("events of a take that failed: %v", evs)
	}
	h.reg.fail(&h.reg.failInsert, false)
	if inf := h.ensure("named", Config{}); inf.Status != StatusRunning || h.keyOf("named") == warm {
		t.Errorf("the next create: %s, key %s (the failed take's %s)", inf.Status, h.keyOf("named"), warm)
	}
}

// A take for a call whose row was written ahead but cannot be inserted
// after the answer tears the sandbox down: nothing is published, no row
// is left, and the ID is free for the next call.
func TestWarmPoolTakeWhoseInsertFailsAfterTheAnswer(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	h.m.fillPool(bg)
	warm := h.waitWarm()
	h.nextEvents()
	h.reg.fail(&h.reg.failApply, true)
	lease, err := h.m.AcquireForCall(bg, "named")
	if err != nil {
		t.Fatal(err)
	}
	if err := lease.Settle(bg); err != nil {
		t.Fatalf("Settle = %v: the row was durable, the answer may go", err)
	}
	lease.Release()
	h.m.settles.Wait()
	if h.rt.runsIn(warm) {
		t.Error("the pool sandbox whose row could not be inserted still runs")
	}
	if _, err := h.m.Get(bg, "named"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after the failed insert: %v, want ErrNotFound", err)
	}
	if evs := h.nextEvents(); len(evs) != 0 {
		t.Errorf("events of a take whose row was never inserted: %v", evs)
	}
	h.reg.fail(&h.reg.failApply, false)
	if inf := h.ensure("named", Config{}); inf.Status != StatusRunning || h.keyOf("named") == warm {
		t.Errorf("the next create: %s, key %s (the failed take's %s)", inf.Status, h.keyOf("named"), warm)
	}
}

// Between a take's answer and SQLite's insert of its row the sandbox is
// listed all the same: a caller that had its first call's answer finds it.
func TestWarmPoolTakeIsListedBeforeItsRowIsInserted(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	h.m.fillPool(bg)
	h.waitWarm()
	hold := make(chan struct{})
	h.reg.mu.Lock()
	h.reg.holdApply = hold
	h.reg.mu.Unlock()
	defer close(hold)
	lease, err := h.m.AcquireForCall(bg, "named")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	if err := lease.Settle(bg); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	list, err := h.m.List(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "named" || list[0].Status != StatusRunning {
		t.Errorf("List while the row's insert is held: %+v, want named, running", list)
	}
}

// A daemon that stops while a pool sandbox is starting leaves nothing of
// it behind: Close cancels the start and waits for it, and what the start
// made is torn down (container, network, files) instead of joining a pool
// that no one will empty.
func TestCloseTearsDownAPoolStartInFlight(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1 })
	h.rt.mu.Lock()
	h.rt.holdReady = true // the start waits for its agent to settle
	h.rt.mu.Unlock()
	filled := make(chan struct{})
	go func() {
		h.m.fillPool(bg)
		close(filled)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for h.rt.live() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the pool sandbox's container never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.m.Close()
	// Close waits for the start in flight (what it left is checked below);
	// fillPool itself returns a moment after, once its loop sees the pool
	// closed, so its end is waited for rather than expected at once.
	select {
	case <-filled:
	case <-time.After(10 * time.Second):
		t.Error("the pool's fill did not end after Close")
	}
	if n := h.rt.live(); n != 0 {
		t.Errorf("%d containers run after Close, want 0", n)
	}
	if keys, _ := h.net.Keys(); len(keys) != 0 {
		t.Errorf("network still attached after Close: %v", keys)
	}
	if entries, _ := os.ReadDir(filepath.Join(h.opts.StateDir, "sandboxes")); len(entries) != 0 {
		t.Errorf("sandbox files left after Close: %v", entries)
	}
	h.m.fillPool(bg) // the idle loop's tick, or a refill timer, after Close
	if n := h.rt.creates(); n != 1 {
		t.Errorf("%d containers created, want 1: a closed pool starts nothing", n)
	}
}

// A burst of takes is answered before the pool refills: no refill starts
// while a take is less than refillDelay old, whoever asks (the idle loop's
// tick included); once the takes stop, the pool fills again.
func TestWarmPoolRefillWaitsForTheBurstToEnd(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 2 })
	h.m.pool.mu.Lock()
	h.m.pool.lastTake = time.Now().Add(time.Hour) // a burst goes on
	h.m.pool.mu.Unlock()
	h.m.fillPool(bg) // the idle loop's tick
	if n := h.rt.creates(); n != 0 {
		t.Fatalf("%d containers created for the pool during a burst, want none", n)
	}
	h.m.pool.mu.Lock()
	h.m.pool.lastTake = time.Now().Add(-refillDelay) // it is over
	h.m.pool.mu.Unlock()
	h.m.refillAfterTakes() // refillSoon's timer
	if n := h.rt.creates(); n != 2 {
		t.Fatalf("%d containers created for the pool after the burst, want 2", n)
	}
}

// On a full host a named sandbox takes the room of a pool sandbox, not of
// another named one (which would be put to sleep) and never fails for it.
func TestFullHostDropsAWarmSandboxBeforeANamedOne(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.WarmPool = 1; o.Capacity.MaxRunning = 2 })
	h.ensure("named", Config{})
	h.m.pool.mu.Lock()
	h.m.pool.lastTake = time.Time{} // no burst: refill now
	h.m.pool.mu.Unlock()
	h.waitWarm()
	custom := h.ensure("custom", Config{Env: map[string]string{"A": "1"}})
	if custom.Status != StatusRunning {
		t.Fatalf("the second named sandbox: %s, want running", custom.Status)
	}
	if inf, err := h.m.Get(bg, "named"); err != nil || inf.Status != StatusRunning {
		t.Errorf("the first named sandbox: %+v, %v; want it still running", inf.Status, err)
	}
}

// waitWarm waits until the pool has a started sandbox (the pool refills
// in the background) and returns its key.
// warmPID is the PID of the pool sandbox key's container.
func (h *harness) warmPID(key string) int {
	h.t.Helper()
	h.m.pool.mu.Lock()
	defer h.m.pool.mu.Unlock()
	for _, w := range h.m.pool.ready {
		if w.rec.Key == key {
			return w.running.pid
		}
	}
	h.t.Fatalf("no pool sandbox %s", key)
	return 0
}

func (h *harness) waitWarm() string {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		h.m.fillPool(bg)
		h.m.pool.mu.Lock()
		var key string
		if len(h.m.pool.ready) > 0 {
			key = h.m.pool.ready[0].rec.Key
		}
		h.m.pool.mu.Unlock()
		if key != "" {
			return key
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the pool was not refilled")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRecoverReattachesCleansAndFinishes(t *testing.T) {
	h := newHarness(t, nil)
	h.ensure("alive", Config{})
	h.ensure("died", Config{})
	h.ensure("stopped", Config{})
	if _, err := h.m.Stop(bg, "stopped"); err != nil {
		t.Fatal(err)
	}
	alivePID, diedPID := h.pidOf("alive"), h.pidOf("died")
	h.m.Close()
	abandon(h.m) // the daemon is killed: containers keep running
	if err := syscall.Kill(diedPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for {
		if st, _ := h.rt.State(bg, containerID(h.keyOf("died"))); st.Status == "stopped" {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	orphan := filepath.Join(h.opts.StateDir, "sandboxes", "orphankey0")
	if err := os.MkdirAll(orphan, 0o700); err != nil {
		t.Fatal(err)
	}

	h.start()
	creates := h.rt.creates()
	if inf, _ := h.m.Get(bg, "alive"); inf.Status != StatusRunning || h.pidOf("alive") != alivePID {
		t.Errorf("alive: %s; want reattached, running, same container", inf.Status)
	}
	lease, err := h.m.Acquire(bg, "alive")
	if err != nil || h.rt.creates() != creates {
		t.Fatalf("Acquire of a reattached sandbox: %v, %d new containers", err, h.rt.creates()-creates)
	}
	lease.Release()
	if inf, _ := h.m.Get(bg, "died"); inf.Status != StatusSleeping {
		t.Errorf("died: %s, want sleeping (starts on its next call)", inf.Status)
	}
	if inf, _ := h.m.Get(bg, "stopped"); inf.Status != StatusStopped {
		t.Errorf("stopped: %s, want stopped", inf.Status)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan state survived recovery: %v", err)
	}
	if inf := h.ensure("died", Config{}); inf.Status != StatusRunning {
		t.Errorf("died after a call: %s", inf.Status)
	}
}

// TestRecoverFinishesInterruptedCreateAndDestroy: rows a killed daemon
// left in creating or destroying.
func TestRecoverFinishesInterruptedCreateAndDestroy(t *testing.T) {
	h := newHarness(t, nil)
	h.ensure("creating", Config{})
	h.ensure("destroying", Config{})
	for id, status := range map[string]Status{"creating": StatusCreating, "destroying": StatusDestroying} {
		if err := h.reg.Registry.SetStatus(bg, id, string(status), "", h.clock.Now()); err != nil {
			t.Fatal(err)
		}
	}
	h.restart()
	if inf, _ := h.m.Get(bg, "creating"); inf.Status != StatusSleeping {
		t.Errorf("interrupted create: %s, want sleeping", inf.Status)
	}
	if _, err := h.m.Get(bg, "destroying"); !errors.Is(err, ErrNotFound) {
		t.Errorf("interrupted destroy: %v, want it finished", err)
	}
	if h.rt.live() != 0 {
		t.Errorf("%d containers run after recovery, want 0", h.rt.live())
	}
	ids := []string{}
	infos, _ := h.m.List(bg)
	for _, inf := range infos {
		ids = append(ids, inf.ID)
	}
	if !slices.Equal(ids, []string{"creating"}) {
		t.Errorf("List = %v", ids)
	}
}

func TestContainersCreatedAheadOfResumesAreBounded(t *testing.T) {
	h := newHarness(t, nil)
	h.m.prepared.Store(maxPrepared)
	b := &box{id: "paused-beyond-the-bound"}
	h.m.prepareResume(bg, b)
	if b.prepared != nil || h.m.prepared.Load() != maxPrepared {
		t.Errorf("a pause beyond the bound got a container created ahead (count %d)", h.m.prepared.Load())
	}
}
