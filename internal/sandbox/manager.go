package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/rename"
	"github.com/sandboxd/sandboxd/internal/backup"
	"github.com/sandboxd/sandboxd/internal/bucket"
	"github.com/sandboxd/sandboxd/internal/failpoint"
	"github.com/sandboxd/sandboxd/internal/metrics"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Options configure a Manager.
type Options struct {
	// StateDir holds the registry and each sandbox's persistent files.
	StateDir string
	// RunDir holds what lives only while the host is up: agent sockets and
	// the runtime's state.
	RunDir string
	// CgroupParent is the cgroup below every hierarchy's root that holds
	// the sandboxes' cgroups; "sandboxd" when empty.
	CgroupParent string
	// AgentPath is the agent binary on the host.
	AgentPath string
	// SpawnPath is the spawn wrapper's binary on the host, mounted beside
	// the agent in crun and runc sandboxes; "": the agent re-executes
	// itself as the wrapper.
	SpawnPath string
	// TranspilePath is the code interpreter's TypeScript helper on the
	// host, mounted beside the agent in every sandbox; "": none (its
	// TypeScript cells fail).
	TranspilePath string
	// Runtime runs crun and runc sandboxes (the one detected at start).
	Runtime Runtime
	// GVisor runs gvisor sandboxes; nil when runsc is missing or failed
	// its probe.
	GVisor  Runtime
	Store   Registry
	Network Network
	Cgroups Cgroups
	// Mounts mounts sandboxes' roots; HostMounts when nil.
	Mounts Mounts
	Images Images
	// ProcViews gives sandboxes their own /proc/meminfo and the like; may
	// be nil (they see the host's).
	ProcViews ProcViews
	Policy    Policy
	Log       *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Capacity bounds what the host runs at once.
	Capacity Capacity
	// IdleCheck is how often idle sandboxes are looked for (default 1s).
	IdleCheck time.Duration
	// Events receives lifecycle events; may be nil.
	Events *Events
	// Metrics registers the manager's metrics; may be nil.
	Metrics *metrics.Registry
	// Quotas returns a tenant's quota (nil: no tenant has one). Sandbox
	// IDs are scoped (package tenant): "acme/demo" is tenant acme's.
	Quotas func(tenant string) tenant.Quota
	// BucketEndpoints decides which endpoints tenants' bucket mounts may
	// name.
	BucketEndpoints bucket.EndpointGuard
	// BucketProxy carries tenants' bucket traffic, checking every
	// connection against BucketEndpoints (nil: tenants' s3fs connects
	// directly, checked only when the mount is made).
	BucketProxy *bucket.EgressProxy
	// HostAccessAllow are the host addresses a tenant's sandbox may name
	// in allowHostCidrs (checkHostAccess); nil: none.
	HostAccessAllow []netip.Prefix
	// WarmPool is how many sandboxes with the default configuration are
	// kept started ahead of need, so that creating one is only naming it.
	WarmPool int
	// Snapshots keeps snapshots and the layers forks boot from; nil: no
	// snapshots.
	Snapshots *snapshot.Store
	// Backups keeps backups of directories (backups.go); nil: none.
	// MaxBackupBytes bounds one backup's tar stream.
	Backups        *backup.Store
	MaxBackupBytes int64
	// UserNS gives crun sandboxes created from now on a user
	// namespace of their own (see userns.go); UserNSBase is the first host
	// UID of their ranges (DefaultUserNSBase when 0).
	UserNS     bool
	UserNSBase uint32
	// Volumes are the named volumes sandboxes mount; may be nil (no
	// sandbox can name one).
	Volumes Volumes
	// HostMemory reports the host's available memory and pressure for
	// Capacity.MemoryReserve and MemoryPressure (nil: ProcMemory).
	HostMemory HostMemory
	// PoolLoginUser, when set, is the user whose login processes the warm
	// pool's sandboxes are made ready for before they join the pool (the
	// E2B layer's default user): see prepareLogin.
	PoolLoginUser string
	// MaxBoots is how many container starts run at once (0: two per
	// CPU the daemon may use); the others wait their turn (bootgate.go).
	MaxBoots int
}

// Capacity is the daemon-wide limits on sandboxes. Zero means unlimited.
type Capacity struct {
	// MaxRunning is the most sandboxes with a running container.
	MaxRunning int
	// MaxTotal is the most sandboxes that exist.
	MaxTotal int
	// MemoryBudget bounds the sum of the memory limits of running
	// sandboxes (0: none). Limits are far above what idle sandboxes use,
	// so the daemon admits by real use (MemoryReserve) by default.
	MemoryBudget int64
	// MemoryReserve is the memory kept available to the host (the
	// kernel's MemAvailable): a sandbox starts only while more than this
	// plus what the starts in flight may take is available, and below it
	// idle sandboxes are put to sleep, least recently used first, at the
	// next start and in the background (0: not checked).
	MemoryReserve int64
	// MemoryPressure is the share of time, in percent over the last 10 s,
	// in which some task waited for memory (PSI "some avg10") above which
	// the host counts as short of memory too (0: not checked).
	MemoryPressure float64
}

// Manager owns every sandbox of this host.
type Manager struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time
	// hostCPUs are the CPUs sandboxes' cpusets are taken from.
	hostCPUs []int

	// settles are the paused sandboxes being torn down and set up again
	// for their resume in the background (resume.go), and the warm takes
	// whose registry rows are being written (adoptForCall).
	settles sync.WaitGroup
	// prepared counts the paused sandboxes holding a container created
	// ahead of their resume, at most maxPrepared (resume.go).
	prepared atomic.Int32

	mu sync.Mutex
	// boxes holds every sandbox in the registry plus those being created;
	// ids holds their IDs sorted, so that a page of the list starts with a
	// binary search rather than a sort of every ID (list.go). Only
	// addBoxLocked and removeBoxLocked change either.
	boxes map[string]*box
	ids   []string
	// running and runningMemory count sandboxes whose container is up or
	// reserved to start, and the sum of their memory limits; booting
	// counts those reserved whose start has not ended yet.
	running       int
	runningMemory int64
	booting       int

	events *Events
	// moves remembers sandboxes that moved to other nodes (move.go).
	moves moves
	m     managerMetrics
	pool  warmPool
	forks forkPools // warm forks of snapshots (forkpool.go)
	// boots admits container starts, MaxBoots at a time (bootgate.go).
	boots chan struct{}
	// userns keeps host ID ranges' user namespaces open (userns.go).
	userns *rootfs.UserNSCache
	// agents is the one transport to every sandbox's agent (agentconn.go).
	agents *agentConns

	// snapMu keeps a snapshot from being removed between a fork reading
	// it and the fork's record naming it.
	snapMu sync.Mutex
}

// box is the in-memory side of one sandbox.
type box struct {
	id string

	// mu serialises lifecycle changes (create, start, stop, destroy).
	mu  sync.Mutex
	rec store.Sandbox // guarded by mu
	cfg Config        // guarded by mu
	// running is the container, guarded by mu. It is set only while the
	// status is running; running with no container means the container
	// went away and the registry could not be told, which the next start
	// records as a failure.
	running   *instance
	destroyed bool // guarded by mu; set when the row is gone
	// moving is the node the sandbox is held for a move to (move.go);
	// guarded by mu. Nothing starts or destroys it meanwhile.
	moving string
	// prepared is a paused gVisor sandbox's container, created ahead for
	// its resume to restore into (resume.go); guarded by mu.
	prepared *instance
	// unsettled: paused, and its stopped container not yet torn down
	// (resume.go); guarded by mu.
	unsettled bool

	// netSlot is the sandbox's network slot plus one (0: none); read
	// without mu when allocating slots for other sandboxes.
	netSlot atomic.Int64
	// uidBase is rec.HostUIDBase (0: none); read without mu when
	// allocating ranges for other sandboxes.
	uidBase atomic.Int64

	// lastUsed is read without mu by List and the flusher.
	lastUsed  atomic.Int64 // unix nanos
	flushedAt atomic.Int64 // lastUsed value last written to the store

	// Read without mu by the idle scan and capacity eviction:
	leases     atomic.Int64 // calls, streams and connections in flight
	up         atomic.Bool  // running != nil (or being started)
	keepAlive  atomic.Bool
	sleepAfter atomic.Int64 // nanoseconds
	memory     int64        // the memory limit; set once at create or load
	status     atomic.Value // Status: rec.Status, for metrics

}

// setConfig stores cfg in the box and its lock-free mirrors.
func (b *box) setConfig(cfg Config) {
	b.cfg = cfg
	b.keepAlive.Store(cfg.KeepAlive)
	b.sleepAfter.Store(int64(cfg.SleepAfter))
	b.memory = cfg.Limits.MemoryBytes
}

// New returns a Manager. Call Recover before serving.
func New(opts Options) *Manager {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "sandboxd"
	}
	if opts.Mounts == nil {
		opts.Mounts = HostMounts{}
	}
	if opts.IdleCheck == 0 {
		opts.IdleCheck = time.Second
	}
	if opts.Events == nil {
		opts.Events = NewEvents()
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewRegistry()
	}
	if opts.HostMemory == nil {
		opts.HostMemory = ProcMemory{}
	}
	m := &Manager{opts: opts, log: opts.Log, now: opts.Now, boxes: map[string]*box{}, events: opts.Events, hostCPUs: hostCPUs(),
		userns: rootfs.NewUserNSCache(maxKeptUserNS), pool: newWarmPool(), agents: newAgentConns()}
	if m.opts.MaxBoots <= 0 {
		m.opts.MaxBoots = 2 * max(1, len(m.hostCPUs))
	}
	m.boots = make(chan struct{}, m.opts.MaxBoots)
	m.m = m.registerMetrics(opts.Metrics)
	m.registerForkPoolMetrics(opts.Metrics)
	return m
}

// Events returns the lifecycle event hub.
func (m *Manager) Events() *Events { return m.events }

// emit publishes a lifecycle event of b.
func (m *Manager) emit(b *box, typ string) {
	m.events.publish(Event{Type: typ, SandboxID: b.id, Status: b.state(), Reason: b.rec.StatusReason, Time: m.now().UTC()})
}

// Info is a sandbox as reported to callers.
type Info struct {
	ID              string
	Status          Status
	StatusReason    string
	Image           string
	Runtime         string
	Config          Config
	Address         string
	Gateway         string
	CreatedAt       time.Time
	LastUsedAt      time.Time
	StatusChangedAt time.Time
	// IdleDeadline is when the sandbox will be put to sleep if nothing
	// uses it; zero when it is not running or kept alive.
	IdleDeadline time.Time
	// HostUIDBase is the host UID of the sandbox's root in its user
	// namespace; 0 without one.
	HostUIDBase uint32
}

func (b *box) info() Info {
	inf := Info{
		ID: b.id, Status: b.state(), StatusReason: b.rec.StatusReason, Image: b.rec.Image,
		Runtime: b.rec.Runtime, Config: b.cfg, CreatedAt: b.rec.CreatedAt,
		LastUsedAt: time.Unix(0, b.lastUsed.Load()).UTC(), StatusChangedAt: b.rec.StatusChangedAt,
	}
	if ids := b.hostIDs(); ids != nil {
		inf.HostUIDBase = ids.Base
	}
	if b.running != nil {
		inf.Address, inf.Gateway = b.running.address, b.running.gateway
	}
	if b.running != nil && !b.cfg.KeepAlive {
		inf.IdleDeadline = inf.LastUsedAt.Add(b.cfg.SleepAfter)
	}
	return inf
}

// lock returns the live box of id locked, or nil if there is none. It
// retries when the box it waited for was destroyed meanwhile.
func (m *Manager) lock(id string) *box {
	for {
		m.mu.Lock()
		b := m.boxes[id]
		m.mu.Unlock()
		if b == nil {
			return nil
		}
		b.mu.Lock()
		if !b.destroyed {
			return b
		}
		b.mu.Unlock()
	}
}

// Ensure returns the sandbox id, creating it with cfg if it does not exist
// (cfg is ignored otherwise), and makes sure it is running. created says
// whether this call created it. Concurrent first calls create it once.
func (m *Manager) Ensure(ctx context.Context, id string, cfg Config) (inf Info, created bool, err error) {
	// Options are checked even when the sandbox exists and they will not
	// be used: a caller who sent a bad option must hear about it, not get
	// the existing sandbox as if the option had been taken.
	resolved, err := m.opts.Policy.Resolve(cfg)
	if err != nil {
		return Info{}, false, err
	}
	if err := m.checkHostAccess(id, resolved.Network); err != nil {
		return Info{}, false, err
	}
	b, created, err := m.getOrCreate(ctx, id, cfg)
	if err != nil {
		return Info{}, false, err
	}
	defer b.mu.Unlock()
	if err := m.startLocked(ctx, b); err != nil {
		return b.info(), created, err
	}
	return b.info(), created, nil
}

// getOrCreate returns the box of id, locked, creating the sandbox's record
// (status creating) if it does not exist yet.
func (m *Manager) getOrCreate(ctx context.Context, id string, cfg Config) (*box, bool, error) {
	return m.getOrCreateWith(ctx, id, cfg, nil)
}

// createOptions change how getOrCreateWith creates a sandbox.
type createOptions struct {
	// forCall: the caller sends the sandbox's agent a call at once, and
	// answers nothing before the lease's Settle. A create from the warm
	// pool then hands out lease before its registry row is written
	// (adoptForCall).
	forCall bool
	// lease is set when such a create took a warm sandbox. getOrCreateWith
	// then returns the box locked by the row's write, which unlocks it:
	// its caller must neither touch nor unlock it.
	lease *Lease
}

// getOrCreateWith is getOrCreate with options (nil: none).
func (m *Manager) getOrCreateWith(ctx context.Context, id string, cfg Config, co *createOptions) (*box, bool, error) {
	for {
		if b := m.lock(id); b != nil {
			if b.rec.ID != "" {
				return b, false, nil
			}
			// A placeholder whose creation failed: take it over.
			if err := m.createLocked(ctx, b, cfg, co); err != nil {
				m.createFailed(ctx, b, err)
				return nil, false, err
			}
			return b, true, nil
		}
		if err := m.moves.check(id, m.now()); err != nil {
			return nil, false, err
		}
		m.mu.Lock()
		if m.boxes[id] != nil {
			m.mu.Unlock()
			continue // lost the race; lock the winner's box
		}
		b := &box{id: id}
		b.mu.Lock()
		m.addBoxLocked(b)
		m.mu.Unlock()
		if err := m.createLocked(ctx, b, cfg, co); err != nil {
			m.createFailed(ctx, b, err)
			return nil, false, err
		}
		return b, true, nil
	}
}

// createFailed unlocks b, whose creation failed with err: a placeholder
// without a row is forgotten, so that the ID is free; one whose row was
// written (a warm sandbox's adoption failed after it) is kept and marked
// failed, so that the registry does not keep it creating.
func (m *Manager) createFailed(ctx context.Context, b *box, err error) {
	if b.rec.ID == "" {
		m.dropPlaceholder(b)
	} else {
		m.failCreate(ctx, b, err)
	}
	b.mu.Unlock()
}

// failCreate records that b, still creating, could not start (err): it is
// failed, with err as its reason, and the next call tries again. It
// changes nothing for a sandbox past creating. b.mu is held.
func (m *Manager) failCreate(ctx context.Context, b *box, err error) {
	if b.state() != StatusCreating {
		return
	}
	if m.changeStatus(ctx, b, StatusFailed, err.Error()) == nil {
		m.emit(b, EventFailed)
	}
}

// dropPlaceholder forgets a box whose creation failed, so the ID is free.
func (m *Manager) dropPlaceholder(b *box) {
	b.destroyed = true
	m.mu.Lock()
	if m.boxes[b.id] == b {
		m.removeBoxLocked(b.id)
	}
	m.mu.Unlock()
}

// createLocked validates cfg and writes the new sandbox's record (co may
// be nil).
func (m *Manager) createLocked(ctx context.Context, b *box, cfg Config, co *createOptions) error {
	if cfg.Snapshot != "" {
		// Held until the record names the snapshot (RemoveSnapshot).
		m.snapMu.Lock()
		defer m.snapMu.Unlock()
	}
	cfg, err := m.fromSnapshot(cfg)
	if err != nil {
		return err
	}
	if cfg, err = m.opts.Policy.Resolve(cfg); err != nil {
		return err
	}
	if err := m.checkHostAccess(b.id, cfg.Network); err != nil {
		return err
	}
	// A fork's image is its snapshot's, by digest.
	img, err := m.opts.Images.Resolve(ctx, imageRef(cfg))
	if err != nil {
		return err
	}
	cfg.ImageDigest = img.Digest
	if err := m.checkVolumesExist(cfg.Volumes); err != nil {
		return err
	}
	if err := m.checkTotal(); err != nil {
		return err
	}
	if err := m.checkCount(b); err != nil {
		return err
	}
	m.noteFork(cfg)
	if w := m.takeWarmFor(b, cfg); w != nil {
		err := m.adopt(ctx, b, w, cfg, co)
		if err == nil || b.rec.ID != "" {
			return err
		}
		m.log.Warn("could not use a warm sandbox; creating one", "sandbox", b.id, "err", err)
	}
	slot := -1
	if cfg.Network.Mode == NetworkInternet {
		if slot, err = m.allocateSlot(b); err != nil {
			return err
		}
	}
	uidBase, err := m.allocateIDs(b, cfg.Runtime)
	if err != nil {
		return err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	now := m.now().UTC()
	rec := store.Sandbox{
		ID: b.id, Key: newKey(), Status: string(StatusCreating), Image: cfg.Image, Runtime: cfg.Runtime,
		Config: data, NetSlot: slot, CreatedAt: now, LastUsedAt: now, StatusChangedAt: now, HostUIDBase: uidBase,
	}
	if err := m.opts.Store.Insert(ctx, rec); err != nil {
		return fmt.Errorf("recording sandbox %s: %w", b.id, err)
	}
	b.rec = rec
	b.status.Store(StatusCreating)
	// The directory exists from the row on: a sandbox without it is lost
	// (lost.go).
	if err := os.MkdirAll(m.paths(rec.Key).dir, 0o700); err != nil {
		m.log.Warn("making a sandbox's directory", "sandbox", b.id, "err", err)
	}
	b.setConfig(cfg)
	b.lastUsed.Store(now.UnixNano())
	b.flushedAt.Store(now.UnixNano())
	m.log.Info("sandbox created", "sandbox", b.id, "key", rec.Key, "image", cfg.Image, "network", cfg.Network.Mode)
	m.emit(b, EventCreated)
	failpoint.Hit("create-after-record")
	return nil
}

// allocateSlot picks the lowest network slot no other sandbox holds.
func (m *Manager) allocateSlot(self *box) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	used := map[int]bool{}
	for _, b := range m.boxes {
		if b != self {
			if n := b.netSlot.Load(); n > 0 {
				used[int(n-1)] = true
			}
		}
	}
	forkSlots, _ := m.forkHeld()
	for _, s := range append(m.pool.slots(), forkSlots...) {
		used[s] = true
	}
	for s := 0; s < m.opts.Network.MaxSlots(); s++ {
		if !used[s] {
			self.netSlot.Store(int64(s) + 1)
			return s, nil
		}
	}
	return -1, fmt.Errorf("%w: all %d network address slots are in use", ErrCapacity, m.opts.Network.MaxSlots())
}

// Get returns the sandbox id without creating or starting it.
func (m *Manager) Get(ctx context.Context, id string) (Info, error) {
	b := m.lock(id)
	if b == nil {
		return Info{}, ErrNotFound
	}
	defer b.mu.Unlock()
	if b.rec.ID == "" {
		return Info{}, ErrNotFound
	}
	return b.info(), nil
}

// List returns every sandbox, ordered by ID. It does not wait for
// sandboxes that are busy starting or stopping: it reports their last
// recorded state.
func (m *Manager) List(ctx context.Context) ([]Info, error) {
	m.mu.Lock()
	boxes := make([]*box, 0, len(m.boxes))
	for _, b := range m.boxes {
		boxes = append(boxes, b)
	}
	m.mu.Unlock()
	var out []Info
	for _, b := range boxes {
		if !b.mu.TryLock() {
			// Busy: report it from the registry rather than wait.
			rec, err := m.opts.Store.Get(ctx, b.id)
			if err != nil {
				continue
			}
			var cfg Config
			json.Unmarshal(rec.Config, &cfg)
			tmp := &box{id: b.id, rec: rec, cfg: cfg}
			tmp.lastUsed.Store(b.lastUsed.Load())
			out = append(out, tmp.info())
			continue
		}
		if b.rec.ID != "" && !b.destroyed {
			out = append(out, b.info())
		}
		b.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Destroy stops the sandbox and deletes everything it has: container,
// mounts, network, cgroups, files and registry row.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	b := m.lock(id)
	if b == nil {
		return ErrNotFound
	}
	defer b.mu.Unlock()
	if b.rec.ID == "" {
		return ErrNotFound
	}
	if b.moving != "" {
		return &MovingError{ID: b.id, Node: b.moving}
	}
	return m.destroyLocked(ctx, b)
}

// destroyLocked deletes b. The status is recorded as destroying first, so
// that a daemon that dies half-way finishes the job when it starts again.
func (m *Manager) destroyLocked(ctx context.Context, b *box) error {
	if err := m.changeStatus(ctx, b, StatusDestroying, ""); err != nil {
		return fmt.Errorf("destroying %s: %w", b.id, err)
	}
	if err := m.teardown(ctx, b); err != nil {
		return fmt.Errorf("destroying %s: %w", b.id, err)
	}
	failpoint.Hit("destroy-after-teardown")
	if err := m.removeFiles(b.rec.Key); err != nil {
		return fmt.Errorf("destroying %s: %w", b.id, err)
	}
	if err := m.opts.Store.Delete(ctx, b.id); err != nil {
		return err
	}
	b.destroyed = true
	m.mu.Lock()
	m.removeBoxLocked(b.id)
	m.mu.Unlock()
	m.log.Info("sandbox destroyed", "sandbox", b.id)
	m.emit(b, EventDestroyed)
	return nil
}

// Lease is the right to call a running sandbox's agent. Release it when
// the call is over.
type Lease struct {
	// Transport reaches the agent. Requests may use any URL host (the
	// host "agent" by custom); one whose URL host is AgentHost's is sent
	// without being copied. Their Host header is the caller's.
	Transport http.RoundTripper
	// NetnsPath is the sandbox's network namespace, for dialling into it.
	NetnsPath string
	// Runtime and CreatedAt are the sandbox's, when the lease was taken.
	// (A lease is taken on every call: it copies no more of the sandbox
	// than its callers read; bench/results/scale.txt.)
	Runtime   string
	CreatedAt time.Time
	inst      *instance
	box       *box
	m         *Manager
	released  atomic.Bool
	// adoption, when set, is the registry row's write of the sandbox
	// that AcquireForCall just took from the warm pool (adoptForCall).
	adoption *adoption
}

// AgentHost is the URL host that the lease's Transport sends on as it is.
func (l *Lease) AgentHost() string {
	if l.inst == nil {
		return "agent"
	}
	return l.inst.link.Host()
}

// Release ends the lease. Only its first call counts.
func (l *Lease) Release() {
	if l.released.CompareAndSwap(false, true) {
		l.box.touch(l.m.now())
		l.box.leases.Add(-1)
	}
}

// Settle waits until the sandbox the lease is on is recorded, which
// matters only for a lease of AcquireForCall that took a warm sandbox:
// the caller must pass nothing of the agent's answer on before Settle
// returns nil. An error means the create failed after all (its row could
// not be written): the sandbox is gone, torn down with whatever the call
// started in it, and the caller answers the error instead.
func (l *Lease) Settle(ctx context.Context) error {
	if l.adoption == nil {
		return nil
	}
	select {
	case <-l.adoption.done:
		return l.adoption.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AgentName is the name that the agent of a sandbox just taken from the
// warm pool has not been told yet: the caller sends it in
// agentapi.NameHeader, and calls AgentNamed once the agent answered a
// call that carried it. "" when the agent knows its name.
func (l *Lease) AgentName() string {
	if l.inst == nil {
		return ""
	}
	if n := l.inst.name.Load(); n != nil {
		return *n
	}
	return ""
}

// AgentNamed records that the agent answered a call that carried name.
func (l *Lease) AgentNamed(name string) {
	if l.inst == nil {
		return
	}
	if n := l.inst.name.Load(); n != nil && *n == name {
		l.inst.name.CompareAndSwap(n, nil)
	}
}

// Acquire returns a lease on the sandbox id's agent, creating the sandbox
// with defaults if it does not exist and starting it if it is not running.
func (m *Manager) Acquire(ctx context.Context, id string) (*Lease, error) {
	return m.acquire(ctx, id, nil)
}

// AcquireForCall is Acquire for a caller that sends the agent one call at
// once and holds its answer until the lease's Settle: a create from the
// warm pool then writes the sandbox's registry row beside that call
// instead of before it.
func (m *Manager) AcquireForCall(ctx context.Context, id string) (*Lease, error) {
	return m.acquire(ctx, id, &createOptions{forCall: true})
}

func (m *Manager) acquire(ctx context.Context, id string, co *createOptions) (*Lease, error) {
	b, _, err := m.getOrCreateWith(ctx, id, Config{}, co)
	if err != nil {
		return nil, err
	}
	if co != nil && co.lease != nil {
		return co.lease, nil // b is the row's write's to unlock
	}
	defer b.mu.Unlock()
	if err := m.startLocked(ctx, b); err != nil {
		return nil, err
	}
	return m.newLease(b, b.running), nil
}

// newLease leases b, whose container is inst. b.mu is held.
func (m *Manager) newLease(b *box, inst *instance) *Lease {
	b.touch(m.now())
	b.leases.Add(1)
	return &Lease{Transport: inst.link, NetnsPath: inst.endpoint.NetnsPath, Runtime: b.rec.Runtime, CreatedAt: b.rec.CreatedAt,
		inst: inst, box: b, m: m}
}

func (b *box) touch(t time.Time) {
	n := t.UnixNano()
	for {
		old := b.lastUsed.Load()
		if n <= old || b.lastUsed.CompareAndSwap(old, n) {
			return
		}
	}
}

// FlushLastUsed writes last-use times that changed to the registry. The
// hot path (every API call) only updates memory; this runs periodically
// and at shutdown.
func (m *Manager) FlushLastUsed(ctx context.Context) error {
	m.mu.Lock()
	times := map[string]time.Time{}
	var flushed []*box
	for id, b := range m.boxes {
		if v := b.lastUsed.Load(); v != b.flushedAt.Load() {
			times[id] = time.Unix(0, v)
			flushed = append(flushed, b)
		}
	}
	m.mu.Unlock()
	if err := m.opts.Store.TouchLastUsed(ctx, times); err != nil {
		return err
	}
	for _, b := range flushed {
		b.flushedAt.Store(times[b.id].UnixNano())
	}
	return nil
}

// newKey returns a short random key for host-side names: 10 characters of
// [a-z0-9], so "sbx"+key fits a 15-byte interface name.
func newKey() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var raw [10]byte
	rand.Read(raw[:])
	for i := range raw {
		raw[i] = alphabet[int(raw[i])%len(alphabet)]
	}
	return string(raw[:])
}

func recKey(key string) store.Sandbox { return store.Sandbox{Key: key} }

// runtimeName is the runtime b runs on: its configuration's, or for a
// sandbox created before runtimes were chosen per sandbox, its row's.
func (b *box) runtimeName() string {
	if b.cfg.Runtime != "" {
		return b.cfg.Runtime
	}
	return b.rec.Runtime
}

// runtimeOf returns the runtime that runs b. crun and runc sandboxes run
// on the runtime the daemon detected, whichever of the two it is: both
// run the same spec on the host's kernel.
func (m *Manager) runtimeOf(b *box) (Runtime, error) {
	if b.runtimeName() != RuntimeGVisor {
		return m.opts.Runtime, nil
	}
	if m.opts.GVisor == nil {
		return nil, fmt.Errorf("%w: sandbox %s runs on gvisor, which is not available on this host (see the daemon's log)", ErrRuntimeUnavailable, b.id)
	}
	return m.opts.GVisor, nil
}

// runtimesOf returns the runtimes that may hold b's container: its own,
// or every available one for host state of an unknown sandbox.
func (m *Manager) runtimesOf(b *box) []Runtime {
	if b.runtimeName() == "" {
		if m.opts.GVisor != nil {
			return []Runtime{m.opts.Runtime, m.opts.GVisor}
		}
		return []Runtime{m.opts.Runtime}
	}
	if rt, err := m.runtimeOf(b); err == nil {
		return []Runtime{rt}
	}
	return nil
}

// isGVisor reports whether b runs on gVisor.
func (b *box) isGVisor() bool { return b.runtimeName() == RuntimeGVisor }

// nameWarm gives the warm sandbox w the name. A gVisor sandbox's hostname
// and files live in gVisor's kernel, so the agent binary does it from
// inside, run by runsc with CAP_SYS_ADMIN (which user code never has):
// the namer started while the sandbox waited in the pool, or, if there is
// none, a runsc exec now.
func (m *Manager) nameWarm(ctx context.Context, w *box, inst *instance, name string) error {
	if !w.isGVisor() {
		n := inst.naming.Swap(nil)
		if n != nil {
			inst.named.Store(n) // closed after the take's answer
		}
		return m.nameSandbox(n, inst.pid, m.paths(w.rec.Key).rootfs, name, rootOwner(w.hostIDs()))
	}
	if inst.namer != nil {
		answer, err := inst.namer.Call(ctx, name)
		if err != nil {
			return err
		}
		if answer != "ok" {
			return fmt.Errorf("naming the sandbox: %s", answer)
		}
		return nil
	}
	rt, err := m.runtimeOf(w)
	if err != nil {
		return err
	}
	return rt.ExecAdmin(ctx, inst.cid, runtime.AgentPath, rename.Arg, name)
}

// nameWarmAtOnce sends the name to the namer of the warm gVisor sandbox
// inst without waiting for its answer, when the namer tells the agent how
// the naming went (rename.TellFlag): the agent then holds the first call
// that carries the name until the namer is done, so the take's call is
// sent at once and travels to the agent while the namer works (one round
// trip fewer on the take's way). It returns the channel that gets the
// namer's outcome, or nil when the sandbox must be named before the call
// (nameWarm): not gVisor, no namer, one that cannot tell, or a send that
// failed.
func (m *Manager) nameWarmAtOnce(ctx context.Context, inst *instance, name string) <-chan error {
	p := inst.namer
	if p == nil || p.Hello != namerTells {
		return nil
	}
	if err := p.Send(ctx, name); err != nil {
		return nil
	}
	named := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), namerAnswerTimeout)
		defer cancel()
		answer, err := p.Answer(ctx)
		if err == nil && answer != "ok" {
			err = fmt.Errorf("naming the sandbox: %s", answer)
		}
		named <- err
		m.retireNamer(inst)
	}()
	return named
}

// namerTells is what a namer that tells the agent adds to its ready line.
const namerTells = "tell"

// namerAnswerTimeout bounds the wait for a namer's answer: its work is a
// few system calls.
const namerAnswerTimeout = 10 * time.Second

// namerLinger is how long a namer that answered stays before the daemon
// closes its stdin and it exits. Its exit (a process's teardown in gVisor,
// runsc's on the host) cost the take's call several ms of the sandbox's
// CPU when it ran beside it; a sandbox just created usually gets its next
// calls right away too.
const namerLinger = 2 * time.Second

// retireNamer closes the namer of inst, which is done, namerLinger from
// now (at once if the instance is closed meanwhile, see instance.close).
func (m *Manager) retireNamer(inst *instance) {
	if p := inst.namer; p != nil {
		time.AfterFunc(namerLinger, p.Close)
	}
}

// startNamer starts, in the warm gVisor sandbox w, the process that will
// name it when it is handed out (`sandbox-agent rename --stdin --tell
// FIFO`), so that handing it out costs a pipe round trip instead of a
// runsc exec, or none on the take's way (nameWarmAtOnce). The sandbox
// joins the pool once the namer runs. Without it (runsc failed), naming
// falls back to a runsc exec.
func (m *Manager) startNamer(ctx context.Context, w *box, rt Runtime) {
	if !w.isGVisor() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, agentBootTimeout)
	defer cancel()
	namer, err := rt.StartAdmin(ctx, w.running.cid, runtime.AgentPath, rename.Arg, rename.StdinFlag, rename.TellFlag, runtime.GVisorNamerFIFO)
	if err != nil {
		m.log.Warn("starting a warm sandbox's namer; naming it will take a runsc exec", "key", w.rec.Key, "err", err)
		return
	}
	w.running.namer = namer
}
