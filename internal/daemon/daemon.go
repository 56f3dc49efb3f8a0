package daemon

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sandboxd/sandboxd/internal/bucket"
	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/console"
	"github.com/sandboxd/sandboxd/internal/doctor"
	"github.com/sandboxd/sandboxd/internal/e2b"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/httpserve"
	"github.com/sandboxd/sandboxd/internal/leftovers"
	"github.com/sandboxd/sandboxd/internal/lxcfs"
	"github.com/sandboxd/sandboxd/internal/metrics"
	"github.com/sandboxd/sandboxd/internal/network"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/requestid"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/secret"
	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/volume"
)

// flushInterval is how often last-use times reach the registry.
const flushInterval = 5 * time.Second

// Run starts sandboxd and serves until ctx ends. Start-up order: state
// directory and lock, token, registry, OCI runtime, cgroups, host image,
// network, recovery of existing sandboxes, then the listener. Shutdown
// order: stop accepting and finish requests (bounded), flush last-use
// times, close the registry. Sandboxes keep running across a daemon
// restart; the next start reattaches them.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("sandboxd must run as root: it creates namespaces, cgroups and mounts")
	}
	// The ports are bound before anything is made on the host: a start
	// that failed at listen (a port in use) came after the network, lxcfs
	// and the shared binaries' mounts, which it left behind.
	lns, err := listenFirst(cfg)
	if err != nil {
		return err
	}
	defer lns.close() // serve's server has closed them already
	for _, d := range []string{cfg.StateDir, cfg.RunDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o700); err != nil {
			return err
		}
	}
	unlock, err := hostLocks(cfg, HostLockDir)
	if err != nil {
		return err
	}
	defer unlock()
	// The same checks as `sandboxd doctor`: one log line per problem, so
	// that a failure further on comes with its likely cause.
	doctor.LogProblems(log, doctor.Run(ctx, doctor.Options{StateDir: cfg.StateDir, NetTable: cfg.NetTable, UserNSBase: uint32(cfg.UserNSBase)}))
	token, err := loadOrCreateToken(filepath.Join(cfg.StateDir, "token"))
	if err != nil {
		return err
	}
	db, err := store.Open(filepath.Join(cfg.StateDir, "registry.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	kc, err := clusterClient(cfg)
	if err != nil {
		return err
	}
	keys, keysTask, err := openKeys(ctx, db, kc, log)
	if err != nil {
		return err
	}

	rt, err := runtime.Detect(ctx, runtime.DetectOptions{
		Want: cfg.Runtime, StateRoot: filepath.Join(cfg.RunDir, "runtime"),
		ProbeDir: filepath.Join(cfg.StateDir, "probe"), Log: log,
	})
	if err != nil {
		return err
	}
	log.Info("using OCI runtime", "runtime", rt.Name, "path", rt.Path)
	if err := rt.CreateFromSmallNamespace(log, cfg.StateDir, cfg.RunDir); err != nil {
		log.Warn("crun creates in the daemon's mount namespace, whose every sandbox's mounts it copies", "err", err)
	}
	gv, runtimes, defaultRuntime, err := detectGVisor(ctx, cfg, rt, log)
	if err != nil {
		return err
	}
	if gv != nil {
		defer gv.Close()
	}
	cg, err := cgroup.Detect()
	if err != nil {
		return fmt.Errorf("reading the host's cgroup layout: %w", err)
	}
	// A start that fails (a bad flag found by the network's setup, a
	// SIGTERM during recovery) takes back the parent cgroup it made: no
	// sandbox is in it, and a daemon that never starts again with this
	// --cgroup-parent would leave it on the host for good.
	newParent := !cg.HasParent(cfg.CgroupParent)
	if err := cg.EnsureParent(cfg.CgroupParent); err != nil {
		return err
	}
	defer func() {
		if err != nil && newParent {
			cg.RemoveParentIfEmpty(cfg.CgroupParent)
		}
	}()
	// What a daemon killed mid-build left running (a RUN step's
	// container, mmdebstrap) dies now; at a stop, what is still running.
	jobs := cg.Jobs(cfg.CgroupParent)
	if err := jobs.Sweep(); err != nil {
		return fmt.Errorf("killing the jobs a previous start left: %w", err)
	}
	defer jobs.Sweep()
	hostImage, err := rootfs.PrepareHost(hostImageDir(cfg))
	if err != nil {
		return fmt.Errorf("preparing the host image: %w", err)
	}
	net, err := newNetwork(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer net.close()
	serving := false
	defer func() {
		if err != nil && !serving {
			takeBackWhenUnused(db, cfg, log)
		}
	}()
	log.Info("sandboxes reach these only if their allowCidrs name them", "blocked", net.m.Blocked())

	registry := metrics.NewRegistry()
	registerHostMetrics(registry, log)
	registerEgressMetrics(registry, net)
	var mgr *sandbox.Manager
	images, err := openImages(cfg, hostImage, rt, jobs, func(ctx context.Context) (map[string]bool, error) {
		return imagesInUse(ctx, mgr)
	}, log)
	if err != nil {
		return err
	}
	snaps, err := snapshot.Open(filepath.Join(cfg.StateDir, "snapshots"))
	if err != nil {
		return fmt.Errorf("opening the snapshot store: %w", err)
	}
	secrets, err := secret.Open(filepath.Join(cfg.StateDir, "secrets"))
	if err != nil {
		return err
	}
	backups, err := openBackups(cfg, secrets)
	if err != nil {
		return fmt.Errorf("opening the backup store: %w", err)
	}
	views := lxcfs.Start(ctx, lxcfs.Options{Dir: cfg.RunDir, Log: log})
	agentPath, err := rootfs.ShareAgent(filepath.Join(cfg.RunDir, "agent"), cfg.AgentPath)
	if err != nil {
		return err
	}
	var spawnPath string
	if cfg.SpawnPath != "" {
		if spawnPath, err = rootfs.ShareBinary(filepath.Join(cfg.RunDir, "spawn"), cfg.SpawnPath, "sandbox-spawn"); err != nil {
			return err
		}
	}
	var transpilePath string
	if cfg.TranspilePath != "" {
		if transpilePath, err = rootfs.ShareBinary(filepath.Join(cfg.RunDir, "transpile"), cfg.TranspilePath, "sandbox-transpile"); err != nil {
			return err
		}
	}
	volumes, err := volume.Open(cfg.StateDir, cfg.RunDir)
	if err != nil {
		return fmt.Errorf("opening the volume store: %w", err)
	}
	var gvisor sandbox.Runtime // nil, not a nil *runtime.Runtime, when runsc is unavailable
	if gv != nil {
		gvisor = gv
	}
	bucketAllow, _ := prefixes("--bucket-endpoint-allow", cfg.BucketEndpointAllow) // checked by Validate
	hostAccessAllow, _ := hostAccessPrefixes(cfg.HostAccessAllow)                  // checked by Validate
	typeRuntimes, _ := instanceTypeRuntimes(cfg.InstanceTypeRuntimes)              // checked by Validate
	bucketGuard := bucket.EndpointGuard{
		Refuse: []netip.Prefix{netip.MustParsePrefix(cfg.Subnet).Masked()},
		Allow:  bucketAllow,
	}
	proxyDials := registry.NewCounterVec("sandboxd_bucket_proxy_connections_total",
		"Connections of tenants' bucket mounts to their endpoints, by result: allowed, refused (the endpoint's name now resolves to an address kept out of tenants' reach) or failed.", "result")
	bucketProxy, err := bucket.StartEgressProxy(filepath.Join(cfg.StateDir, "bucket-proxy.json"), bucketGuard, proxyDials.Inc, log)
	if err != nil {
		return err
	}
	defer bucketProxy.Close()
	mgr = sandbox.New(sandbox.Options{
		StateDir: cfg.StateDir, RunDir: cfg.RunDir, AgentPath: agentPath, SpawnPath: spawnPath, TranspilePath: transpilePath, CgroupParent: cfg.CgroupParent,
		Runtime: rt, GVisor: gvisor, Store: db, Network: net, Cgroups: sandbox.HostCgroups(cg),
		Images: sandboxImages{images}, ProcViews: views,
		Policy: sandbox.Policy{
			DefaultImage: cfg.DefaultImage, DefaultLimits: cfg.DefaultLimits,
			MaxLimits: cfg.MaxLimits, DefaultNetwork: cfg.DefaultNetwork, SandboxSubnet: netip.MustParsePrefix(cfg.Subnet).Masked(),
			DefaultSleepAfter: cfg.SleepAfter, MaxSleepAfter: cfg.MaxSleepAfter,
			DefaultRuntime: defaultRuntime, Runtimes: runtimes, InstanceTypeRuntimes: typeRuntimes,
		},
		Capacity:  cfg.Capacity,
		Quotas:    keys.QuotaOf,
		IdleCheck: cfg.IdleCheck,
		WarmPool:  cfg.WarmPool,
		// The E2B layer's commands are login processes of its default
		// user: pooled sandboxes are made ready for them.
		PoolLoginUser:   e2b.DefaultUser,
		BucketEndpoints: bucketGuard,
		BucketProxy:     bucketProxy,
		HostAccessAllow: hostAccessAllow,
		Snapshots:       snaps,
		Backups:         backups, MaxBackupBytes: cfg.MaxBackupBytes,
		Volumes:    volumes,
		UserNS:     probeUserNS(cfg, rt.Name, log),
		UserNSBase: uint32(cfg.UserNSBase),
		Metrics:    registry,
		Log:        log,
	})
	if err := mgr.Recover(ctx); err != nil {
		return fmt.Errorf("recovering sandboxes: %w", err)
	}
	node, err := joinCluster(ctx, cfg, kc, mgr, log)
	if err != nil {
		return err
	}
	collectHostImages(cfg, hostImage, log)
	collectImages(ctx, images, cfg, log)
	pv, err := newPreview(ctx, cfg, db, mgr, lns.preview, log)
	if err != nil {
		return err
	}
	certs, err := loadCerts(cfg)
	if err != nil {
		return err
	}
	if certs != nil && pv.ln != nil {
		pv.ln = tls.NewListener(pv.ln, certs.config())
	}
	self := newSelfListener()
	mcp, err := newMCP(self, token, cfg.Version, log)
	if err != nil {
		return err
	}
	e2bServer, err := newE2B(self, token, keys, cfg, log)
	if err != nil {
		return err
	}
	api := httpapi.New(httpapi.Options{Manager: mgr, Secrets: secrets, Volumes: volumes, Images: images, Token: token, Version: cfg.Version, Runtime: defaultRuntime, Runtimes: runtimes, Log: log, Metrics: registry,
		Ports: pv.ports, Proxy: pv.proxy, Signer: pv.signer, Preview: pv.options(cfg), Console: console.Handler(), MCP: mcp, E2B: e2bServer, BodyTimeout: cfg.BodyTimeout, Egress: net,
		Keys: keys})
	tasks := append(pv.tasks(api, log), func(ctx context.Context) error { return watchSIGHUP(ctx, certs, log) }, e2bServer.Run,
		collectBackups(backups, log))
	var handler http.Handler = api
	if node != nil {
		tasks = append(tasks, node.Run, keysTask)
		handler = node.Handler(api, token)
	}
	serving = true
	return serve(ctx, cfg, lns.api, certs, requestid.Middleware(handler), self, mgr, log, tasks...)
}

// takeBackWhenUnused is for a start that failed after the network's setup
// (a recovery error, a SIGTERM during recovery, a store that cannot open):
// with no sandbox in the registry it removes lxcfs, the mounts in the
// daemon's directories and its nft table. A daemon keeps these across
// restarts for its running sandboxes, and the next start with the same
// directories reuses them; with no sandbox nothing needs them, and a daemon
// that never starts again with these directories (a test's, a mistyped
// flag's) would leave them on the host for good. The cgroup parent is Run's
// to take back (only if it made it).
func takeBackWhenUnused(db *store.Store, cfg Config, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if sbs, err := db.List(ctx); err != nil || len(sbs) > 0 {
		return
	}
	leftovers.RemoveKept(leftovers.Daemon{StateDir: cfg.StateDir, RunDir: cfg.RunDir, Table: cfg.NetTable})
	log.Info("the failed start removed its lxcfs, mounts and nft table: no sandbox needs them")
}

// listeners are the daemon's ports: the API's, and the previews' (nil
// without --preview-listen).
type listeners struct{ api, preview net.Listener }

// listenFirst binds the daemon's ports. Connections that come before the
// daemon serves wait in the backlog.
func listenFirst(cfg Config) (listeners, error) {
	var lns listeners
	var err error
	if lns.api, err = net.Listen("tcp", cfg.Listen); err != nil {
		return lns, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	if cfg.PreviewListen != "" {
		if lns.preview, err = net.Listen("tcp", cfg.PreviewListen); err != nil {
			lns.api.Close()
			return lns, fmt.Errorf("listening for previews on %s: %w", cfg.PreviewListen, err)
		}
	}
	return lns, nil
}

func (l listeners) close() {
	for _, ln := range []net.Listener{l.api, l.preview} {
		if ln != nil {
			ln.Close()
		}
	}
}

// loadCerts returns the TLS certificate's reloader, or nil without TLS.
func loadCerts(cfg Config) (*certReloader, error) {
	if !cfg.TLS() {
		return nil, nil
	}
	return newCertReloader(cfg.TLSCert, cfg.TLSKey)
}

// serve runs the API listener (and self, the in-memory listener of the
// daemon's own MCP tools), the last-use flusher and the tasks (each must
// return when its context ends) until ctx ends.
func serve(ctx context.Context, cfg Config, ln net.Listener, certs *certReloader, handler http.Handler, self *selfListener, mgr *sandbox.Manager, log *slog.Logger, tasks ...func(context.Context) error) error {
	scheme := "http"
	if certs != nil {
		ln, scheme = tls.NewListener(ln, certs.config()), "https"
	}
	// ConnContext: the preview proxy may join a client's connection
	// (proxy.WithConn).
	per, err := cfg.connsPerSource()
	if err != nil {
		return err
	}
	srv := httpserve.Public(&http.Server{Handler: handler, ConnContext: proxy.WithConn}, "api", log, per)
	log.Info("sandboxd serving", "listen", ln.Addr().String(), "scheme", scheme, "state_dir", cfg.StateDir, "version", cfg.Version)
	if cfg.Banner {
		writeBanner(os.Stderr, cfg, ln.Addr(), scheme)
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, task := range tasks {
		g.Go(func() error { return task(gctx) })
	}
	for _, l := range []net.Listener{ln, self} {
		g.Go(func() error {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error { return mgr.Run(gctx) })
	g.Go(func() error {
		t := time.NewTicker(flushInterval)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if err := mgr.FlushLastUsed(gctx); err != nil {
					log.Warn("recording last-use times", "err", err)
				}
			}
		}
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close() // streams still open after the grace period
		}
		mgr.Close()
		return mgr.FlushLastUsed(sctx)
	})
	return g.Wait()
}

// loadOrCreateToken returns the admin token, creating it (mode 0600) on
// first start.
func loadOrCreateToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(data))
		if len(tok) < 32 {
			return "", fmt.Errorf("token file %s holds a token shorter than 32 characters", path)
		}
		return tok, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	tok := hex.EncodeToString(raw)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating token file: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return tok, f.Close()
}

// netAdapter gives the sandbox manager the network package's services.
type netAdapter struct {
	m   *network.Manager
	dns []netip.Addr
	// egress is the DNS forwarder and name checker; nil without DNS.
	egress *egressService

	// idsMu guards ids: the sandbox ID of each attached key, for the
	// egress metric and summary.
	idsMu sync.Mutex
	ids   map[string]string

	log *slog.Logger
	// pktMu guards the last read of the denied packet counters.
	pktMu sync.Mutex
	pkts  map[string]uint64
	pktAt time.Time
}

func newNetwork(ctx context.Context, cfg Config, log *slog.Logger) (*netAdapter, error) {
	ncfg, err := cfg.networkConfig()
	if err != nil {
		return nil, err
	}
	dns := ncfg.DNS
	upstreams, err := parseUpstreams(cfg.DNSUpstream)
	if err != nil {
		return nil, err
	}
	if len(upstreams) == 0 {
		for _, d := range dns {
			upstreams = append(upstreams, netip.AddrPortFrom(d, 53))
		}
	}
	eg, err := listenEgress(upstreams, log)
	if err != nil {
		return nil, err
	}
	if eg != nil {
		ncfg.DNSPort, ncfg.CheckPort = eg.fwd.Port(), eg.chk.Port()
	}
	m, err := network.New(ncfg)
	if err == nil {
		if err = m.Setup(ctx); err != nil {
			m.Close()
		}
	}
	if err != nil {
		if eg != nil {
			eg.close()
		}
		return nil, err
	}
	if eg != nil {
		eg.serve(m)
	}
	return &netAdapter{m: m, dns: dns, egress: eg, ids: map[string]string{}, log: log}, nil
}

// close stops the forwarder and checker (sandboxes' DNS stops until the
// next daemon start) and releases the manager's sockets.
func (n *netAdapter) close() {
	if n.egress != nil {
		n.egress.close()
	}
	n.m.Close()
}

func (n *netAdapter) Attach(ctx context.Context, key string, req sandbox.NetworkRequest) (sandbox.NetworkEndpoint, error) {
	ep, err := n.m.Create(ctx, key, network.CreateOptions{
		Mode: network.Mode(req.Mode), Slot: req.Slot, AllowCIDRs: req.AllowCIDRs, AllowHostCIDRs: req.AllowHostCIDRs,
		Egress: egressOf(req),
	})
	if err != nil {
		return sandbox.NetworkEndpoint{}, err
	}
	n.idsMu.Lock()
	n.ids[key] = req.SandboxID
	n.idsMu.Unlock()
	return sandbox.NetworkEndpoint{NetnsPath: ep.NetnsPath, Address: ep.Address, Gateway: ep.Gateway}, nil
}

func egressOf(req sandbox.NetworkRequest) network.Egress {
	return network.Egress{AllowDomains: req.AllowDomains, DenyDomains: req.DenyDomains, DenyCIDRs: req.DenyCIDRs, DefaultDeny: req.DefaultDeny}
}

// SetPolicy replaces a running sandbox's egress policy, then cuts the
// connections through the name checker that it now denies.
func (n *netAdapter) SetPolicy(ctx context.Context, key string, req sandbox.NetworkRequest) error {
	if err := n.m.SetPolicy(ctx, key, req.AllowCIDRs, egressOf(req)); err != nil {
		return err
	}
	if n.egress != nil {
		if addr, ok := n.m.AddressOf(key); ok {
			n.egress.chk.Recheck(addr)
		}
	}
	return nil
}

func (n *netAdapter) Detach(ctx context.Context, key string) error {
	if n.egress != nil {
		n.egress.denials.Forget(key)
	}
	n.idsMu.Lock()
	delete(n.ids, key)
	n.idsMu.Unlock()
	return n.m.Destroy(ctx, key)
}

func (n *netAdapter) Keys() ([]string, error) { return n.m.List() }
func (n *netAdapter) MaxSlots() int           { return n.m.SlotCount() }
func (n *netAdapter) DNS() []netip.Addr       { return n.dns }

// registerHostMetrics exports the host's cgroup counts per controller
// (/proc/cgroups): the memory controller's count, dying cgroups included,
// is what runs into the kernel's host-wide limit of 65,535 memory cgroups.
func registerHostMetrics(r *metrics.Registry, log *slog.Logger) {
	r.NewGaugeFunc("sandboxd_host_cgroups", "Cgroups on the host by controller, dying ones included (the kernel allows 65535 memory cgroups).", "controller", func() map[string]float64 {
		counts, err := cgroup.HostCounts()
		if err != nil {
			log.Warn("reading /proc/cgroups", "err", err)
		}
		return counts
	})
}

// detectGVisor probes runsc. Without it the daemon still serves crun or
// runc sandboxes, says why in one log line, and gvisor sandboxes answer
// RUNTIME_UNAVAILABLE; but a daemon told to make gvisor its default
// refuses to start rather than fail every sandbox.
func detectGVisor(ctx context.Context, cfg Config, native *runtime.Runtime, log *slog.Logger) (*runtime.Runtime, []string, string, error) {
	runtimes := []string{native.Name}
	def := cfg.DefaultRuntime
	if def == "" {
		def = native.Name
	}
	gv, err := runtime.DetectGVisor(ctx, runtime.GVisorOptions{
		Path: cfg.RunscPath, Platform: cfg.GVisorPlatform, StateRoot: filepath.Join(cfg.RunDir, "runtime"),
		ProbeDir: filepath.Join(cfg.StateDir, "probe"),
	})
	if err != nil {
		if def == sandbox.RuntimeGVisor {
			return nil, nil, "", fmt.Errorf("--default-runtime gvisor: %w", err)
		}
		log.Warn("gVisor is not available; gvisor sandboxes will answer RUNTIME_UNAVAILABLE", "err", err)
		return nil, runtimes, def, nil
	}
	log.Info("gVisor is available", "path", gv.Path, "platform", gv.Platform())
	return gv, append(runtimes, sandbox.RuntimeGVisor), def, nil
}
