package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/store"
)

// The fakes at the manager's edge. The runtime is the only one that runs
// something real: each "container" is this test binary started again as
// a small agent (fakeAgentEnv), which serves the routes the manager calls
// on the listening socket the manager hands to the container, so pidfds,
// sockets, health checks, shutdowns and deaths are real processes and
// real connections, and nothing needs root.

// fakeAgentEnv makes the test binary a fake agent; its value is the
// container's bundle directory, where a file named "busy" makes the agent
// report activity.
const fakeAgentEnv = "SANDBOXD_TEST_FAKE_AGENT"

// fakeHoldReadyEnv, set, makes the fake agent never answer GET
// /internal/ready: a warm sandbox's start then waits until it is cancelled.
const fakeHoldReadyEnv = "SANDBOXD_TEST_FAKE_AGENT_HOLD_READY"

func TestMain(m *testing.M) {
	if bundle := os.Getenv(fakeAgentEnv); bundle != "" {
		runFakeAgent(bundle)
		return
	}
	os.Exit(m.Run())
}

// runFakeAgent serves the agent routes the manager itself calls, on the
// listening socket at runtime.AgentListenFD, until told to shut down.
func runFakeAgent(bundle string) {
	l, err := net.FileListener(os.NewFile(runtime.AgentListenFD, "agent.sock"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake agent:", err)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+agentapi.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.AgentHealth{ProtocolVersion: api.ProtocolVersion, PID: 1})
	})
	mux.HandleFunc("GET "+agentapi.PathActivity, func(w http.ResponseWriter, r *http.Request) {
		_, err := os.Stat(filepath.Join(bundle, "busy"))
		json.NewEncoder(w).Encode(api.AgentActivity{Busy: err == nil})
	})
	mux.HandleFunc("GET "+agentapi.PathReady, func(w http.ResponseWriter, r *http.Request) {
		if os.Getenv(fakeHoldReadyEnv) != "" {
			<-r.Context().Done() // never settles
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /exec", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the warm pool's warm-up, `:`
		// What a command would see as HOSTNAME, when a call names the agent.
		json.NewEncoder(w).Encode(api.ExecResult{Stdout: r.Header.Get(agentapi.NameHeader)})
	})
	mux.HandleFunc("POST "+agentapi.PathLogin, func(w http.ResponseWriter, r *http.Request) {
		var req api.AgentLoginRequest
		json.NewDecoder(r.Body).Decode(&req)
		os.WriteFile(filepath.Join(bundle, "login"), []byte(req.User), 0o644) // what the test reads
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST "+agentapi.PathShutdown, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.(http.Flusher).Flush()
		go os.Exit(0)
	})
	http.Serve(l, mux)
}

// fakeRuntime runs fake agents as containers. It is their parent and
// their only waiter.
type fakeRuntime struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	created    int
	// failCreate, when set, is what the next Creates return.
	failCreate error
	// halfCreate makes a failing Create leave its container behind, as a
	// runtime killed part way through a create leaves its state.
	halfCreate bool
	// holdReady makes the next containers' agents never settle.
	holdReady bool
}

// creates counts the containers created so far.
func (r *fakeRuntime) creates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.created
}

// failCreates makes Create fail with err (nil: succeed again).
func (r *fakeRuntime) failCreates(err error) {
	r.mu.Lock()
	r.failCreate = err
	r.mu.Unlock()
}

type fakeContainer struct {
	bundle string
	pid    int
	exited chan struct{}
}

func newFakeRuntime(t *testing.T) *fakeRuntime {
	r := &fakeRuntime{containers: map[string]*fakeContainer{}}
	t.Cleanup(r.killAll)
	return r
}

func (r *fakeRuntime) Create(ctx context.Context, id, bundle string, opts runtime.CreateOptions) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failCreate != nil && !r.halfCreate {
		return 0, r.failCreate
	}
	if _, ok := r.containers[id]; ok {
		return 0, fmt.Errorf("container %s exists", id)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fakeAgentEnv+"="+bundle)
	if r.holdReady {
		cmd.Env = append(cmd.Env, fakeHoldReadyEnv+"=1")
	}
	cmd.ExtraFiles = opts.ExtraFiles
	cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	c := &fakeContainer{bundle: bundle, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(c.exited)
	}()
	r.containers[id] = c
	r.created++
	if r.failCreate != nil {
		return 0, r.failCreate
	}
	return c.pid, nil
}

// count is how many containers the runtime holds.
func (r *fakeRuntime) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.containers)
}

func (r *fakeRuntime) container(id string) (*fakeContainer, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.containers[id]
	return c, ok
}

func (r *fakeRuntime) Start(ctx context.Context, id string) error {
	if _, ok := r.container(id); !ok {
		return runtime.ErrNotExist
	}
	return nil
}

func (r *fakeRuntime) State(ctx context.Context, id string) (runtime.State, error) {
	c, ok := r.container(id)
	if !ok {
		return runtime.State{}, runtime.ErrNotExist
	}
	select {
	case <-c.exited:
		return runtime.State{Status: "stopped", PID: c.pid}, nil
	default:
		return runtime.State{Status: "running", PID: c.pid}, nil
	}
}

func (r *fakeRuntime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	c, ok := r.container(id)
	if !ok {
		return runtime.ErrNotExist
	}
	select {
	case <-c.exited:
		return nil
	default:
		return syscall.Kill(c.pid, sig)
	}
}

func (r *fakeRuntime) Delete(ctx context.Context, id string) error {
	c, ok := r.container(id)
	if !ok {
		return nil
	}
	r.Kill(ctx, id, syscall.SIGKILL)
	<-c.exited
	r.mu.Lock()
	delete(r.containers, id)
	r.mu.Unlock()
	return nil
}

// Pause stops the fake agent's process (SIGSTOP), as a freezer would.
func (r *fakeRuntime) Pause(ctx context.Context, id string) error {
	return r.Kill(ctx, id, syscall.SIGSTOP)
}

func (r *fakeRuntime) Resume(ctx context.Context, id string) error {
	return r.Kill(ctx, id, syscall.SIGCONT)
}

func (r *fakeRuntime) ExecAdmin(ctx context.Context, id string, args ...string) error {
	return errors.New("fake runtime: no admin exec")
}

func (r *fakeRuntime) StartAdmin(ctx context.Context, id string, args ...string) (*runtime.AdminProcess, error) {
	return nil, errors.New("fake runtime: no admin exec")
}

func (r *fakeRuntime) Annotations() map[string]string { return nil }

func (r *fakeRuntime) Checkpoint(ctx context.Context, id, image string, o runtime.CheckpointOptions) error {
	return runtime.ErrCheckpointUnsupported
}

func (r *fakeRuntime) RestoreInto(ctx context.Context, id, image string, opts runtime.CreateOptions) error {
	return runtime.ErrCheckpointUnsupported
}

func (r *fakeRuntime) Restore(ctx context.Context, id, bundle, image string, opts runtime.CreateOptions) (int, error) {
	return 0, runtime.ErrCheckpointUnsupported
}

func (r *fakeRuntime) SignalInit(ctx context.Context, id string, sig syscall.Signal) error {
	return nil
}

// live counts containers whose process runs.
// runsIn reports whether a live container has its bundle in the
// directory of the sandbox key.
func (r *fakeRuntime) runsIn(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.containers {
		select {
		case <-c.exited:
		default:
			if strings.Contains(c.bundle, key) {
				return true
			}
		}
	}
	return false
}

func (r *fakeRuntime) live() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.containers {
		select {
		case <-c.exited:
		default:
			n++
		}
	}
	return n
}

func (r *fakeRuntime) killAll() {
	r.mu.Lock()
	ids := make([]string, 0, len(r.containers))
	for id := range r.containers {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	for _, id := range ids {
		r.Delete(context.Background(), id)
	}
}

// faultyRegistry is the real registry (SQLite in a temp dir) whose writes
// can be made to fail.
type faultyRegistry struct {
	Registry
	mu                                sync.Mutex
	failStatus, failDelet, failInsert bool
	// failApply fails the SQLite insert of a row written ahead;
	// holdApply, when set, holds it until closed.
	failApply bool
	holdApply chan struct{}
}

var errInjected = errors.New("injected registry failure")

func (f *faultyRegistry) fail(which *bool, on bool) {
	f.mu.Lock()
	*which = on
	f.mu.Unlock()
}

func (f *faultyRegistry) failing(which *bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *which
}

func (f *faultyRegistry) SetStatus(ctx context.Context, id, status, reason string, at time.Time) error {
	if f.failing(&f.failStatus) {
		return errInjected
	}
	return f.Registry.SetStatus(ctx, id, status, reason, at)
}

func (f *faultyRegistry) Insert(ctx context.Context, rec store.Sandbox) error {
	if f.failing(&f.failInsert) {
		return errInjected
	}
	return f.Registry.Insert(ctx, rec)
}

func (f *faultyRegistry) InsertAhead(ctx context.Context, rec store.Sandbox) (store.Pending, error) {
	if f.failing(&f.failInsert) {
		return nil, errInjected
	}
	p, err := f.Registry.InsertAhead(ctx, rec)
	if err != nil {
		return nil, err
	}
	return &faultyPending{Pending: p, f: f}, nil
}

// faultyPending is a row written ahead whose Apply can be made to fail.
type faultyPending struct {
	store.Pending
	f *faultyRegistry
}

func (p *faultyPending) Apply(ctx context.Context) error {
	p.f.mu.Lock()
	hold := p.f.holdApply
	p.f.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if p.f.failing(&p.f.failApply) {
		return errInjected
	}
	return p.Pending.Apply(ctx)
}

func (f *faultyRegistry) Delete(ctx context.Context, id string) error {
	if f.failing(&f.failDelet) {
		return errInjected
	}
	return f.Registry.Delete(ctx, id)
}

// fakeNetwork hands out empty endpoints (network mode none needs no
// address) and remembers what is attached.
type fakeNetwork struct {
	mu       sync.Mutex
	attached map[string]bool
}

func (n *fakeNetwork) Attach(ctx context.Context, key string, req NetworkRequest) (NetworkEndpoint, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.attached[key] = true
	return NetworkEndpoint{}, nil
}

func (n *fakeNetwork) Detach(ctx context.Context, key string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.attached, key)
	return nil
}

func (n *fakeNetwork) Keys() ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for k := range n.attached {
		out = append(out, k)
	}
	return out, nil
}

func (n *fakeNetwork) MaxSlots() int     { return 8 }
func (n *fakeNetwork) DNS() []netip.Addr { return nil }
func (n *fakeNetwork) SetPolicy(ctx context.Context, key string, req NetworkRequest) error {
	return nil
}

func (n *fakeNetwork) isAttached(key string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attached[key]
}

// fakeCgroups accepts everything.
type fakeCgroups struct{}

func (fakeCgroups) Group(path string) Cgroup { return fakeCgroup{} }

type fakeCgroup struct{}

func (fakeCgroup) PrepareUser() ([]specs.Mount, error) { return nil, nil }
func (fakeCgroup) Split(int, cgroup.UserLimits) error  { return nil }
func (fakeCgroup) SplitNeedsInit() bool                { return true }
func (fakeCgroup) RemoveChildren() error               { return nil }
func (fakeCgroup) Remove() error                       { return nil }

// fakeMounts makes an overlay's directories without mounting anything,
// and records hostnames.
type fakeMounts struct {
	mu        sync.Mutex
	hostnames map[int]string
	// failHostname, when set, is what setting a hostname returns.
	failHostname error
	// utsOpened and utsOpen count, by pid, the UTS namespaces opened and
	// those not closed yet.
	utsOpened, utsOpen map[int]int
}

func (f *fakeMounts) MountOverlay(ov rootfs.Overlay) error {
	for _, d := range []string{ov.Upper, ov.Work, ov.Target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeMounts) Unmount(dir string, limit time.Duration) error { return nil }

func (f *fakeMounts) UTS(pid int) (UTSNamespace, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.utsOpened[pid]++
	f.utsOpen[pid]++
	return &fakeUTS{f: f, pid: pid}, nil
}

// fakeUTS is the UTS namespace of a fake container's pid: a hostname
// recorded in its fakeMounts.
type fakeUTS struct {
	f      *fakeMounts
	pid    int
	closed bool
}

func (u *fakeUTS) SetHostname(name string) error {
	u.f.mu.Lock()
	defer u.f.mu.Unlock()
	if u.closed {
		return errors.New("UTS namespace closed")
	}
	if u.f.failHostname != nil {
		return u.f.failHostname
	}
	u.f.hostnames[u.pid] = name
	return nil
}

func (u *fakeUTS) Close() error {
	u.f.mu.Lock()
	defer u.f.mu.Unlock()
	if !u.closed {
		u.closed = true
		u.f.utsOpen[u.pid]--
	}
	return nil
}

// gave reports whether some container was given the hostname name.
func (f *fakeMounts) gave(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.hostnames {
		if n == name {
			return true
		}
	}
	return false
}

// uts returns how many times the UTS namespace of pid was opened, and how
// many of those are open.
func (f *fakeMounts) uts(pid int) (opened, open int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.utsOpened[pid], f.utsOpen[pid]
}

func (f *fakeMounts) hostname(pid int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hostnames[pid]
}

// fakeImages knows one image, "host", of one empty layer.
type fakeImages struct{ layer string }

func (i fakeImages) Resolve(ctx context.Context, name string) (*rootfs.Image, error) {
	if name != "host" {
		return nil, fmt.Errorf("%w: %s", ErrImageNotFound, name)
	}
	return &rootfs.Image{Name: "host", Layers: []string{i.layer}}, nil
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// harness is one "daemon": a manager over fakes, on directories and a
// registry that a second harness may share (a daemon restart).
type harness struct {
	t      *testing.T
	m      *Manager
	opts   Options
	rt     *fakeRuntime
	reg    *faultyRegistry
	net    *fakeNetwork
	mounts *fakeMounts
	clock  *fakeClock
	events *Subscription
}

// newHarness starts a manager on fakes; tweak adjusts its options.
func newHarness(t *testing.T, tweak func(*Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	layer := filepath.Join(dir, "layer")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rt: newFakeRuntime(t), reg: &faultyRegistry{Registry: st},
		net: &fakeNetwork{attached: map[string]bool{}}, mounts: &fakeMounts{hostnames: map[int]string{}, utsOpened: map[int]int{}, utsOpen: map[int]int{}},
		clock: &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	// Agent sockets live in the run directory, and a socket's path must
	// fit 108 bytes: t.TempDir's names the test, so use a short one.
	run, err := os.MkdirTemp("", "sbx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	h.opts = Options{
		StateDir: filepath.Join(dir, "state"), RunDir: run, AgentPath: "/bin/true",
		Runtime: h.rt, Store: h.reg, Network: h.net, Cgroups: fakeCgroups{}, Mounts: h.mounts,
		Images: fakeImages{layer: layer},
		Policy: Policy{
			DefaultImage:   "host",
			DefaultLimits:  Limits{MemoryBytes: 256 << 20, MilliCPU: 500, Pids: 256},
			MaxLimits:      Limits{MemoryBytes: 1 << 30, MilliCPU: 2000, Pids: 1024},
			DefaultNetwork: NetworkNone, DefaultSleepAfter: time.Minute, MaxSleepAfter: time.Hour,
			DefaultRuntime: RuntimeCrun, Runtimes: []string{RuntimeCrun},
		},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: h.clock.Now,
	}
	if testing.Verbose() {
		h.opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if tweak != nil {
		tweak(&h.opts)
	}
	h.start()
	return h
}

// start makes the harness's manager (again: a daemon restart), recovers
// and subscribes to its events.
func (h *harness) start() {
	h.t.Helper()
	h.opts.Events = nil
	h.m = New(h.opts)
	h.events = h.m.Events().Subscribe()
	if err := h.m.Recover(context.Background()); err != nil {
		h.t.Fatalf("Recover: %v", err)
	}
	m := h.m
	h.t.Cleanup(func() { m.Close(); abandon(m) })
}

// abandon makes m let go of its containers as a killed daemon would:
// they keep running, and m no longer watches them. A watcher that saw an
// agent die before the "kill" must not act after it either: under load it
// took the box's lock only once the next manager was starting the same
// container, and its teardown killed the new agent (TestRecoveryFinds-
// LostSandboxes: "agent exited during start-up"). With running unset, a
// watcher still to come finds its instance gone and returns; one already
// inside holds the lock, so abandon waits for it.
func abandon(m *Manager) {
	for _, b := range m.snapshot() {
		b.mu.Lock()
		if b.running != nil {
			b.running.close()
			b.running = nil
		}
		b.mu.Unlock()
	}
}

// restart simulates a daemon killed and started again on the same state.
func (h *harness) restart() {
	h.t.Helper()
	h.m.Close()
	abandon(h.m)
	h.start()
}

// nextEvents returns the types of the events published so far.
func (h *harness) nextEvents() []string {
	var out []string
	for {
		select {
		case ev := <-h.events.C:
			out = append(out, ev.Type)
		default:
			return out
		}
	}
}

// waitEvent waits for an event of typ about id; the bound only stops a
// broken test from hanging.
func (h *harness) waitEvent(id, typ string) Event {
	h.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-h.events.C:
			if ev.SandboxID == id && ev.Type == typ {
				return ev
			}
		case <-deadline:
			h.t.Fatalf("no %q event for %s", typ, id)
		}
	}
}

// row is the registry's record of id.
func (h *harness) row(id string) store.Sandbox {
	h.t.Helper()
	rec, err := h.reg.Registry.Get(context.Background(), id)
	if err != nil {
		h.t.Fatalf("registry row of %s: %v", id, err)
	}
	return rec
}

// ensure creates (or starts) id with cfg and fails the test on error.
func (h *harness) ensure(id string, cfg Config) Info {
	h.t.Helper()
	inf, _, err := h.m.Ensure(context.Background(), id, cfg)
	if err != nil {
		h.t.Fatalf("Ensure(%s): %v", id, err)
	}
	return inf
}

// pidOf is the PID of id's running container.
func (h *harness) pidOf(id string) int {
	h.t.Helper()
	b := h.m.lock(id)
	if b == nil {
		h.t.Fatalf("no sandbox %s", id)
	}
	defer b.mu.Unlock()
	if b.running == nil {
		h.t.Fatalf("sandbox %s has no container", id)
	}
	return b.running.pid
}

// keyOf is id's host key.
func (h *harness) keyOf(id string) string {
	h.t.Helper()
	return h.row(id).Key
}
