package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/failpoint"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// The warm pool keeps a few sandboxes with the default configuration
// started ahead of need. Creating a sandbox whose configuration is the
// default one then takes a started one and names it: its registry row is
// written, its hostname set (in its UTS namespace) and its /etc/hostname
// and /etc/hosts rewritten, and its agent told HOSTNAME (which every
// sandbox has in its environment, as containers usually do) in a header of
// the first call the daemon makes to it (agentapi.NameHeader; the shell
// started for the placeholder name picks the new value up before that
// call's command). Everything else about it — disk, network slot, cgroup,
// container — is the same as if it had been created for the name, because
// nothing else in it depends on the name.
//
// Warm sandboxes count against capacity like running ones. They have no
// registry row, so a daemon that dies removes them at its next start
// (their keys are unknown); a clean shutdown tears them down.
type warmPool struct {
	// closing ends when the manager closes: it cancels the starts in
	// flight, which starts waits for (each discards what it made).
	closing context.Context
	close   context.CancelFunc
	starts  sync.WaitGroup

	mu      sync.Mutex
	closed  bool // no start begins, and none joins the pool
	ready   []*box
	booting []*box
	failed  time.Time // last failed start: back off
	// lastTake is when a sandbox was last taken; refill, when set, is the
	// timer that refills the pool refillDelay after it (refillSoon).
	lastTake time.Time
	refill   *time.Timer
}

// newWarmPool returns an empty pool, open.
func newWarmPool() warmPool {
	ctx, cancel := context.WithCancel(context.Background())
	return warmPool{closing: ctx, close: cancel}
}

// slots lists the network slots the pool's sandboxes hold.
func (p *warmPool) slots() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for _, b := range append(append([]*box{}, p.ready...), p.booting...) {
		if n := b.netSlot.Load(); n > 0 {
			out = append(out, int(n-1))
		}
	}
	return out
}

// uidBases lists the host UID ranges the pool's sandboxes hold.
func (p *warmPool) uidBases() []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []uint32
	for _, b := range append(append([]*box{}, p.ready...), p.booting...) {
		if n := b.uidBase.Load(); n > 0 {
			out = append(out, uint32(n))
		}
	}
	return out
}

// warmConfig is the configuration of pool sandboxes: the defaults.
func (m *Manager) warmConfig(ctx context.Context) (Config, error) {
	cfg, err := m.opts.Policy.Resolve(Config{})
	if err != nil {
		return cfg, err
	}
	img, err := m.opts.Images.Resolve(ctx, cfg.Image)
	if err != nil {
		return cfg, err
	}
	cfg.ImageDigest = img.Digest
	return cfg, nil
}

// takeWarm hands out a started pool sandbox made with exactly cfg, if one
// is ready.
func (m *Manager) takeWarm(cfg Config) *box {
	m.pool.mu.Lock()
	defer m.pool.mu.Unlock()
	var keep []*box
	var taken *box
	for _, w := range m.pool.ready {
		switch {
		case w.running == nil || !w.running.alive():
			go m.discardWarm(w) // died while waiting
		case taken == nil && reflect.DeepEqual(w.cfg, poolable(cfg)):
			taken = w
		default:
			keep = append(keep, w)
		}
	}
	m.pool.ready = keep
	return taken
}

// poolable is cfg as far as a warm sandbox depends on it. Labels are
// not: they live in the registry row only, which adopt writes with the
// sandbox's own configuration, so a labelled create takes a warm sandbox
// too (E2B's metadata are labels).
func poolable(cfg Config) Config {
	cfg.Labels = nil
	return cfg
}

// adopt gives the pool sandbox w the identity of b, which is locked and
// has no record yet. With co.forCall, the take ends before the registry
// row is written: see adoptForCall.
func (m *Manager) adopt(ctx context.Context, b *box, w *box, cfg Config, co *createOptions) (err error) {
	defer m.refillSoon()
	data, err := json.Marshal(cfg)
	if err != nil {
		m.discardWarm(w)
		return err
	}
	now := m.now().UTC()
	// The row is written once, as running, beside the naming: the
	// container is up, and a daemon that dies before the write leaves no
	// row, so the next one collects the container as an orphan. One that
	// dies between the write and the end of the naming leaves a running
	// sandbox whose hostname may still be the placeholder's until its next
	// start, which puts the name in the container's own configuration.
	rec := store.Sandbox{
		ID: b.id, Key: w.rec.Key, Status: string(StatusRunning), Image: cfg.Image, Runtime: cfg.Runtime,
		Config: data, NetSlot: w.rec.NetSlot, CreatedAt: now, LastUsedAt: now, StatusChangedAt: now,
		HostUIDBase: w.rec.HostUIDBase,
	}
	// b holds w's network slot and UID range from now on: w left the
	// pool, whose slots and ranges the allocators no longer see.
	b.netSlot.Store(int64(rec.NetSlot) + 1)
	b.uidBase.Store(int64(rec.HostUIDBase))
	inst := w.running
	steps := newStepTimer()
	began := time.Now()
	// The row's write and the naming are independent, so they go at once.
	// For a call, the row is written ahead (store.Store.InsertAhead): its
	// answer waits for the row to be durable, not for SQLite's insert.
	forCall := co != nil && co.forCall
	inserted := make(chan error, 1)
	var insert time.Duration
	var row store.Pending // set before inserted is sent (forCall)
	go func() {
		var err error
		if forCall {
			row, err = m.opts.Store.InsertAhead(context.WithoutCancel(ctx), rec)
		} else {
			err = m.opts.Store.Insert(context.WithoutCancel(ctx), rec)
		}
		insert = time.Since(began)
		if err != nil {
			err = fmt.Errorf("recording sandbox %s: %w", b.id, err)
		}
		inserted <- err
	}()
	logged := func(err error) {
		m.log.Debug("sandbox adopted", "sandbox", b.id, "steps",
			steps.String()+" insert="+insert.Round(10*time.Microsecond).String(), "err", err)
	}
	name := tenant.Local(b.id)
	var named <-chan error
	if forCall {
		named = m.nameWarmAtOnce(ctx, inst, name)
	}
	if named == nil {
		if err := m.nameWarm(ctx, w, inst, name); err != nil {
			err = fmt.Errorf("naming a warm sandbox: %w", err)
			if <-inserted == nil {
				m.unrecordAdopted(ctx, b, rec, err)
			}
			m.discardWarm(w)
			if b.rec.ID == "" {
				forgetTake(b)
			}
			logged(err)
			return err
		}
		m.retireNamer(inst)
		if !forCall {
			inst.closeNamed()
		}
	}
	// The agent learns HOSTNAME from the header of the first call the
	// daemon makes to it (Lease.AgentName): no round trip of its own.
	inst.name.Store(&name)
	steps.mark("name")
	b.rec = rec
	b.setConfig(cfg)
	b.lastUsed.Store(now.UnixNano())
	b.flushedAt.Store(now.UnixNano())
	if forCall {
		steps.mark("take")
		answered := false
		m.adoptForCall(ctx, b, w, inst, co, inserted, &row, named, func(err error) {
			if answered {
				steps.mark("apply")
			} else {
				steps.mark("settle")
			}
			logged(err)
		}, func() {
			answered = true
			steps.mark("settle")
		})
		return nil
	}
	err = <-inserted
	steps.mark("row")
	logged(err)
	if err != nil {
		m.discardWarm(w)
		forgetTake(b)
		return err
	}
	m.publishAdopted(b, w, inst)
	return nil
}

// adoptForCall ends the take of w by b for a caller that sends the agent
// a call at once (co.forCall): it hands the caller its lease now, with
// the row's write ahead (*row once inserted is sent) and, on gVisor, the
// naming (named, nil if it is done) still going on, so that the call runs
// beside them instead of after them. The caller's answer waits for both
// (Lease.Settle): nothing is told before the row is durable and the
// sandbox named. SQLite's insert of the row (Apply) runs after the answer
// is let go; b is published only once it is done, and b.mu is held until
// then, so every other call on b waits for the row too. If the write
// ahead or the naming fails, w is torn down (killing whatever the call
// started in it), the row dropped, b forgotten, and Settle returns the
// error; an insert that fails after the answer tears the sandbox down
// likewise. answered is told when the answer was let go, done how the
// take ended.
func (m *Manager) adoptForCall(ctx context.Context, b *box, w *box, inst *instance, co *createOptions, inserted <-chan error, row *store.Pending, named <-chan error, done func(error), answered func()) {
	a := &adoption{done: make(chan struct{})}
	b.status.Store(StatusRunning)
	co.lease = m.newLease(b, inst)
	co.lease.adoption = a
	m.settles.Add(1)
	go func() {
		defer m.settles.Done()
		defer b.mu.Unlock()
		a.err = <-inserted
		if named != nil {
			if err := <-named; err != nil && a.err == nil {
				a.err = fmt.Errorf("naming a warm sandbox: %w", err)
			}
		}
		if a.err != nil {
			if *row != nil { // the naming failed
				(*row).Drop()
				m.deleteAdoptedRow(ctx, b, a.err) // if it was inserted at once
			}
			m.failAdoption(b, w, a.err)
			done(a.err)
			close(a.done)
			return
		}
		close(a.done)
		answered()
		inst.closeNamed()
		failpoint.Hit("take-before-insert")
		err := (*row).Apply(context.WithoutCancel(ctx))
		if err == nil {
			m.publishAdopted(b, w, inst)
		} else {
			err = fmt.Errorf("recording sandbox %s: %w", b.id, err)
			(*row).Drop()
			m.failAdoption(b, w, err)
		}
		done(err)
	}()
}

// failAdoption tears down the pool sandbox w whose take by b failed
// (cause) after its first call began, and forgets b.
func (m *Manager) failAdoption(b *box, w *box, cause error) {
	m.log.Warn("a warm sandbox's take failed after its first call began; tearing it down", "sandbox", b.id, "err", cause)
	m.discardWarm(w)
	m.dropPlaceholder(b)
}

// publishAdopted makes b, whose row is written, the running sandbox of
// the pool sandbox w's container inst.
func (m *Manager) publishAdopted(b *box, w *box, inst *instance) {
	b.status.Store(StatusRunning)
	m.log.Info("sandbox created from the warm pool", "sandbox", b.id, "key", b.rec.Key)
	m.emit(b, EventCreated)
	// The pool's capacity reservation becomes b's.
	w.up.Store(false)
	b.up.Store(true)
	b.running = inst
	go m.watch(b, inst)
	m.m.starts.Inc("")
	m.emit(b, EventStarted)
}

// forgetTake undoes what a take that failed set in b before its row was
// written, so that b's create may go on as a cold start.
func forgetTake(b *box) {
	b.rec = store.Sandbox{}
	b.netSlot.Store(0)
	b.uidBase.Store(0)
}

// adoption is the end of a take for a call (adoptForCall): the registry
// row's write and what follows it.
type adoption struct {
	done chan struct{}
	err  error // set before done is closed
}

// deleteAdoptedRow deletes the row adoptForCall wrote for b, whose
// naming failed (cause) after its first call was sent: the sandbox is
// torn down, and the call's error is the create's. A row that cannot be
// deleted stays as that of a sandbox with no container, which its next
// call starts afresh.
func (m *Manager) deleteAdoptedRow(ctx context.Context, b *box, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := m.opts.Store.Delete(ctx, b.id); err != nil {
		m.log.Warn("deleting the row of a warm sandbox that could not be named", "sandbox", b.id, "err", err, "cause", cause)
	}
}

// unrecordAdopted deletes the row that adopt wrote for b when naming the
// warm sandbox failed beside it (cause), so that b's creation can go on
// as a cold start under a new row. If the row cannot be deleted, b keeps
// it, as a sandbox still creating: its creation then fails like any other
// (failCreate), with the reason recorded, and the next call starts it
// afresh.
func (m *Manager) unrecordAdopted(ctx context.Context, b *box, rec store.Sandbox, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := m.opts.Store.Delete(ctx, b.id); err != nil {
		m.log.Warn("deleting the row of a warm sandbox that could not be named", "sandbox", b.id, "err", err, "cause", cause)
		rec.Status = string(StatusCreating)
		b.rec = rec
		b.status.Store(StatusCreating)
	}
}

// nameSandbox sets the hostname of the warm sandbox whose init is pid,
// and rewrites /etc/hostname and /etc/hosts in its root (mounted at
// rootDir; the container sees the same overlay), in place: they are the
// ones its first boot wrote (rewriteRootFiles). With n, what prepareNaming
// opened while it waited, it only writes, and leaves n open: the caller
// closes it (instance.closeNamed).
func (m *Manager) nameSandbox(n *warmNaming, pid int, rootDir, name string, owner int) error {
	if n != nil {
		if err := n.uts.SetHostname(name); err != nil {
			return err
		}
		return n.rewrite(name)
	}
	uts, err := m.opts.Mounts.UTS(pid)
	if err != nil {
		return err
	}
	defer uts.Close()
	if err := uts.SetHostname(name); err != nil {
		return err
	}
	return rewriteRootFiles(rootDir, map[string]string{"hostname": name + "\n", "hosts": hostsFile(name)}, owner)
}

// warmNaming is what naming a warm crun or runc sandbox takes, opened
// while it waits in the pool (prepareNaming), so that its take only
// writes: its UTS namespace, and its /etc/hostname and /etc/hosts, open
// for writing in place. Opening them at the take (the namespace through
// /proc, each file through os.Root) was most of the name step's 0.3 ms:
// 115 against 20 us for the hostname, 77 against 13 us for the files
// (loaded). It holds three descriptors while the sandbox waits, none of
// them a kernel object that counts against a per-user limit, and closes
// them once it named it, or with its instance (before its root is
// unmounted).
type warmNaming struct {
	uts   UTSNamespace
	files [2]*os.File // /etc/hostname, /etc/hosts
}

// prepareNaming opens what naming the warm sandbox w takes, while it
// waits: no code but the daemon's and the agent's has run in it, so its
// files are the ones its boot wrote. Without them (a file of the image
// that is not a regular file of its own, say) the take opens what it
// needs itself.
func (m *Manager) prepareNaming(w *box, inst *instance) {
	if w.isGVisor() {
		return // named from inside: see startNamer
	}
	uts, err := m.opts.Mounts.UTS(inst.pid)
	if err != nil {
		m.log.Warn("opening a warm sandbox's UTS namespace; its take will", "key", w.rec.Key, "err", err)
		return
	}
	n := &warmNaming{uts: uts}
	if err := n.openFiles(m.paths(w.rec.Key).rootfs); err != nil {
		n.close()
		return // rewriteRootFiles replaces them at the take
	}
	inst.naming.Store(n)
}

// openFiles opens /etc/hostname and /etc/hosts of the root at rootDir for
// writing in place (openInPlace).
func (n *warmNaming) openFiles(rootDir string) error {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	for i, name := range [2]string{"hostname", "hosts"} {
		if n.files[i], err = openInPlace(root, "etc/"+name); err != nil {
			return err
		}
	}
	return nil
}

// rewrite writes the files of a sandbox called name.
func (n *warmNaming) rewrite(name string) error {
	for i, content := range [2]string{name + "\n", hostsFile(name)} {
		if err := overwrite(n.files[i], content); err != nil {
			return fmt.Errorf("writing /etc/%s in the sandbox: %w", [2]string{"hostname", "hosts"}[i], err)
		}
	}
	return nil
}

func (n *warmNaming) close() {
	n.uts.Close()
	for _, f := range n.files {
		if f != nil {
			f.Close()
		}
	}
}

// hostUTS is an open UTS namespace of this host's.
type hostUTS struct{ ns *os.File }

// openUTS opens the UTS namespace of pid.
func openUTS(pid int) (*hostUTS, error) {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", pid))
	if err != nil {
		return nil, err
	}
	return &hostUTS{ns: ns}, nil
}

// daemonUTS is the daemon's own UTS namespace, the one its threads go back
// to, opened once.
var daemonUTS = sync.OnceValues(func() (*os.File, error) { return os.Open("/proc/self/ns/uts") })

// SetHostname enters the namespace on the caller's own thread, locked,
// sets the hostname and comes back: a take's name step waits for it, and
// handing the work to a goroutine of its own (as before) cost two thread
// wake-ups and 7-15 us more of it (loaded). If it cannot come back, the
// thread stays locked, so it dies with the caller's goroutine instead of
// serving others from the sandbox's namespace (the caller itself then
// sees the sandbox's hostname until it ends; the daemon reads no hostname
// of its own). Never on the process's main thread (see osthread.Discard):
// there a goroutine started while the caller holds it does the work.
func (u *hostUTS) SetHostname(name string) error {
	self, err := daemonUTS()
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	if unix.Gettid() != unix.Getpid() {
		return setHostnameLocked(u.ns, self, name)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- setHostnameLocked(u.ns, self, name)
	}()
	err = <-errc
	runtime.UnlockOSThread()
	return err
}

// setHostnameLocked sets the hostname of the UTS namespace ns from the
// caller's locked thread and brings the thread back to the daemon's
// namespace self, then unlocks it; one that cannot come back stays
// locked (SetHostname).
func setHostnameLocked(ns, self *os.File, name string) error {
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWUTS); err != nil {
		runtime.UnlockOSThread() // still the daemon's
		return err
	}
	err := unix.Sethostname([]byte(name))
	if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWUTS); rerr != nil {
		return fmt.Errorf("returning to the host's UTS namespace: %w", rerr)
	}
	runtime.UnlockOSThread()
	return err
}

func (u *hostUTS) Close() error { return u.ns.Close() }

// refillDelay is how long after the last take the pool starts refilling.
// A create is almost always followed at once by the sandbox's first call,
// and a refill is a whole container start (most of a CPU for tens of ms),
// which on a small host would slow that call by as much: the first call
// of a pooled sandbox took 3.6 ms at the median and 8 ms at p99 with the
// refill beside it. Every take pushes the refill back, so a burst of
// creates, each of which found a pool sandbox, is answered before the
// first refill starts instead of sharing the CPU with one.
const refillDelay = 100 * time.Millisecond

// refillSoon asks the pool to be refilled once no sandbox has been taken
// for refillDelay (the idle loop's tick refills it too).
func (m *Manager) refillSoon() {
	m.pool.mu.Lock()
	defer m.pool.mu.Unlock()
	m.pool.lastTake = time.Now()
	if m.pool.refill == nil {
		m.pool.refill = time.AfterFunc(refillDelay, m.refillAfterTakes)
	}
}

// refillAfterTakes fills the pool, or waits again if a take came since
// the timer was set.
func (m *Manager) refillAfterTakes() {
	m.pool.mu.Lock()
	if wait := refillDelay - time.Since(m.pool.lastTake); wait > 0 {
		m.pool.refill.Reset(wait)
		m.pool.mu.Unlock()
		return
	}
	m.pool.refill = nil
	m.pool.mu.Unlock()
	m.fillPool(context.Background())
}

// fillPool starts pool sandboxes until there are WarmPool of them, one at a
// time. It never exceeds capacity: a full host keeps a smaller pool.
func (m *Manager) fillPool(ctx context.Context) {
	for {
		m.pool.mu.Lock()
		need := m.opts.WarmPool - len(m.pool.ready) - len(m.pool.booting)
		backoff := time.Since(m.pool.failed) < 30*time.Second
		// Takes in the last refillDelay are a burst still being answered:
		// refillAfterTakes fills the pool once it is over.
		busy := time.Since(m.pool.lastTake) < refillDelay
		if m.pool.closed || need <= 0 || backoff || busy || len(m.pool.booting) > 0 {
			m.pool.mu.Unlock()
			return
		}
		w := &box{}
		m.pool.booting = append(m.pool.booting, w)
		m.pool.starts.Add(1) // under mu: Close waits for it
		m.pool.mu.Unlock()

		err := m.startPoolSandbox(ctx, w)
		m.pool.mu.Lock()
		for i, x := range m.pool.booting {
			if x == w {
				m.pool.booting = append(m.pool.booting[:i], m.pool.booting[i+1:]...)
				break
			}
		}
		closed := m.pool.closed
		switch {
		case closed:
		case err == nil:
			m.pool.ready = append(m.pool.ready, w)
		default:
			m.pool.failed = time.Now()
		}
		m.pool.mu.Unlock()
		if closed {
			m.log.Info("a warm sandbox's start was cut short by the shutdown", "key", w.rec.Key, "err", err)
		}
		if closed && err == nil {
			m.discardWarm(w) // the manager closed during the start
		}
		m.pool.starts.Done()
		if closed {
			return
		}
		if err != nil {
			m.log.Warn("could not start a warm sandbox", "err", err)
			return
		}
	}
}

// startPoolSandbox starts the pool sandbox w, cancelled if the manager
// closes meanwhile: a daemon that stops must not leave behind a container,
// cgroup or mount that no one will tear down (a failed start undoes its
// own; one that started is discarded by its caller).
func (m *Manager) startPoolSandbox(ctx context.Context, w *box) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.pool.closing, cancel)
	defer stop()
	return m.startWarm(ctx, w)
}

// startWarm starts one pool sandbox.
func (m *Manager) startWarm(ctx context.Context, w *box) error {
	cfg, err := m.warmConfig(ctx)
	if err != nil {
		return err
	}
	if err := m.startWarmWith(ctx, w, cfg); err != nil {
		return err
	}
	m.prepareLogin(ctx, w)
	return nil
}

// startWarmWith starts the sandbox w, of no name yet, with cfg, to be
// adopted later (the pool's, or a snapshot's warm fork).
func (m *Manager) startWarmWith(ctx context.Context, w *box, cfg Config) (err error) {
	w.rec = store.Sandbox{Key: newKey(), NetSlot: -1}
	w.id = "warm-" + w.rec.Key
	w.setConfig(cfg)
	if cfg.Network.Mode == NetworkInternet {
		slot, err := m.allocateSlot(w)
		if err != nil {
			return err
		}
		w.rec.NetSlot = slot
	}
	if w.rec.HostUIDBase, err = m.allocateIDs(w, cfg.Runtime); err != nil {
		return err
	}
	if err := m.enterBoot(ctx); err != nil {
		return err
	}
	defer m.leaveBoot()
	// Never make room for the pool: it takes only what is free.
	if !m.tryReserve(w) {
		return fmt.Errorf("%w: no room for a warm sandbox", ErrCapacity)
	}
	inst, err := m.boot(ctx, w)
	m.bootEnded()
	if err != nil {
		m.release(w)
		m.removeFiles(w.rec.Key)
		return err
	}
	w.running = inst
	m.prepareNaming(w, inst)
	if rt, err := m.runtimeOf(w); err == nil {
		m.startNamer(ctx, w, rt)
	}
	if m.awaitSettled(ctx, w, inst) {
		m.warmShell(ctx, w, inst)
	}
	return nil
}

// warmShell runs an empty command in the warm sandbox w before it joins
// its pool, still in the boot turn. A sandbox's first command cost about
// twice its later ones, in the agent (its exec path's first run) and in
// the shell (its first command line), and the first command of a taken
// sandbox is its taker's create: with one run ahead, that create's exec
// is a second one (at load 25, p50 11.3 ms against 20.5 ms without,
// interleaved). A warm-up that fails costs only that.
func (m *Manager) warmShell(ctx context.Context, w *box, inst *instance) {
	ctx, cancel := context.WithTimeout(ctx, agentBootTimeout)
	defer cancel()
	if err := inst.agent.WarmShell(ctx); err != nil && ctx.Err() == nil {
		m.log.Warn("warming up a warm sandbox's shell", "key", w.rec.Key, "err", err)
	}
}

// awaitSettled waits, still holding the boot turn, until the agent of the
// warm sandbox w has finished starting up (its default shell runs): a
// sandbox handed out before that made its first command wait for the
// shell and share the CPU with the rest of the start-up (a take right
// after the pool refilled: 138 ms p50 at load 14 against 16 ms for one
// that had settled). An agent that does not settle in time still joins
// the pool: it answers, only its first command is slower. It says whether
// the agent settled.
func (m *Manager) awaitSettled(ctx context.Context, w *box, inst *instance) bool {
	ctx, cancel := context.WithTimeout(ctx, agentBootTimeout)
	defer cancel()
	if err := inst.agent.Ready(ctx); err != nil {
		m.log.Warn("a warm sandbox's agent did not finish starting up", "key", w.rec.Key, "err", err)
		return false
	}
	return true
}

// dropWarm tears down one ready pool sandbox, if there is one, to make
// room for a named sandbox on a full host: a pool sized for bursts must
// never cost a named sandbox its start or put another to sleep. It says
// whether it freed one. The pool refills only into room that is free.
func (m *Manager) dropWarm() bool {
	m.pool.mu.Lock()
	if len(m.pool.ready) == 0 {
		m.pool.mu.Unlock()
		return false
	}
	w := m.pool.ready[len(m.pool.ready)-1]
	m.pool.ready = m.pool.ready[:len(m.pool.ready)-1]
	m.pool.mu.Unlock()
	m.log.Info("dropped a warm sandbox to make room for a named one", "key", w.rec.Key)
	m.discardWarm(w)
	return true
}

// discardWarm tears a pool sandbox down and deletes its files.
func (m *Manager) discardWarm(w *box) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := m.teardown(ctx, w); err != nil {
		m.log.Warn("tearing down a warm sandbox", "key", w.rec.Key, "err", err)
	}
	m.release(w)
	if err := m.removeFiles(w.rec.Key); err != nil {
		m.log.Warn("removing a warm sandbox's files", "key", w.rec.Key, "err", err)
	}
}

// Close tears down the warm pool, its starts in flight included (they
// are cancelled and waited for). Named sandboxes keep running: the next
// daemon reattaches them.
func (m *Manager) Close() {
	m.pool.mu.Lock()
	m.pool.closed = true // no refill from now on
	ready := m.pool.ready
	m.pool.ready = nil
	if m.pool.refill != nil {
		m.pool.refill.Stop()
	}
	m.pool.mu.Unlock()
	m.pool.close()
	for _, w := range ready {
		m.discardWarm(w)
	}
	m.pool.starts.Wait()
	m.closeForkPools()
	m.settles.Wait()
	m.userns.Close()
	m.agents.close()
}
