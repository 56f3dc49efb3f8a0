package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/failpoint"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// agentBootTimeout bounds how long a new container's agent may take to
// answer its first health check.
const agentBootTimeout = 15 * time.Second

// agentReserve is the memory and the number of tasks kept for the agent:
// user code gets the sandbox's limits minus these, in its own cgroup.
const (
	agentReserveBytes = 32 << 20
	agentReservePids  = 16
)

// instance is a running container.
type instance struct {
	cid      string
	pid      int
	pidfd    *os.File // readable once init (the agent) has exited
	endpoint NetworkEndpoint
	// address and gateway are endpoint's, formatted once: every list
	// row shows them, and formatting allocates.
	address, gateway string
	link             *agentLink       // the agent's socket, over the daemon's shared transport
	agent            *agentapi.Client // the agent's internal routes, over link
	// namer names a warm gVisor sandbox when it is handed out (see
	// startNamer); nil for others, or when it could not be started.
	namer *runtime.AdminProcess
	// naming is what naming a warm crun or runc sandbox takes, opened
	// while it waits (prepareNaming); taken by its take.
	naming atomic.Pointer[warmNaming]
	// named is naming once the take used it, until it is closed after the
	// take's answer (closeNamed): its three closes are not on the way.
	named atomic.Pointer[warmNaming]
	// name is the name of a sandbox just taken from the warm pool until
	// its agent answered a call that carried it (Lease.AgentName).
	name    atomic.Pointer[string]
	closing atomic.Bool
}

// newInstance watches the container's init process through a pidfd.
func newInstance(cid string, pid int, ep NetworkEndpoint, conns *agentConns, socket string) (*instance, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("watching the agent (pid %d): %w", pid, err)
	}
	link := conns.link(socket)
	inst := &instance{cid: cid, pid: pid, pidfd: os.NewFile(uintptr(fd), "pidfd"), endpoint: ep,
		link: link, agent: agentapi.NewClient(link)}
	if ep.Address.IsValid() {
		inst.address, inst.gateway = ep.Address.String(), ep.Gateway.String()
	}
	return inst, nil
}

// alive reports whether the container's init (the agent) is still running.
// A pidfd becomes readable when its process exits, and, unlike a PID, can
// never come to mean another process.
func (inst *instance) alive() bool {
	rc, err := inst.pidfd.SyscallConn()
	if err != nil {
		return false
	}
	exited := false
	rc.Control(func(fd uintptr) { exited = pidfdReadable(fd) })
	return !exited
}

// pidfdReadable polls a pidfd without waiting. EINTR is retried: the Go
// runtime's preemption signals interrupt syscalls, and a poll that failed
// must not be taken for an exit.
func pidfdReadable(fd uintptr) bool {
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		return err == nil && n > 0 && fds[0].Revents&unix.POLLIN != 0
	}
}

// waitExit blocks until init exits (true) or the instance is closed
// (false). It waits in the runtime's poller, not on a thread.
func (inst *instance) waitExit() bool {
	rc, err := inst.pidfd.SyscallConn()
	if err != nil {
		return false
	}
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		exited = pidfdReadable(fd)
		return exited // false: wait for readability again
	})
	return err == nil && exited && !inst.closing.Load()
}

func (inst *instance) close() {
	inst.closing.Store(true)
	inst.link.close()
	inst.pidfd.Close()
	if inst.namer != nil {
		inst.namer.Close()
	}
	if n := inst.naming.Swap(nil); n != nil {
		n.close() // before the root is unmounted: it holds files of it
	}
	inst.closeNamed()
}

// closeNamed closes what naming the sandbox took (instance.named), once.
func (inst *instance) closeNamed() {
	if n := inst.named.Swap(nil); n != nil {
		n.close()
	}
}

// paths are a sandbox's places on the host.
type paths struct {
	dir, upper, work, rootfs, bundle, log string // persistent, in StateDir
	etcWritten                            string // marker: /etc files written into the root
	etc                                   string // where older daemons kept /etc files
	disk, diskImage                       string // with a disk quota
	run, socket                           string // in RunDir
	sysfs                                 string // in RunDir: see MountSysfs
}

// paths are a sandbox's places on the host. With a disk quota, the
// writable layer (upper and work) lives on the sandbox's own filesystem,
// mounted at disk from diskImage.
func (m *Manager) paths(key string) paths {
	dir := filepath.Join(m.opts.StateDir, "sandboxes", key)
	run := filepath.Join(m.opts.RunDir, "sandboxes", key)
	return paths{
		dir: dir, upper: filepath.Join(dir, "upper"), work: filepath.Join(dir, "work"),
		rootfs: filepath.Join(dir, "rootfs"), etc: filepath.Join(dir, "etc"), etcWritten: filepath.Join(dir, "etc.written"),
		bundle: filepath.Join(dir, "bundle"), log: filepath.Join(dir, "agent.log"),
		disk: filepath.Join(dir, "disk"), diskImage: filepath.Join(dir, "disk.img"),
		run: run, socket: filepath.Join(run, "agent.sock"),
		sysfs: filepath.Join(m.opts.RunDir, "sysfs", key),
	}
}

func (p paths) withQuota() paths {
	p.upper = filepath.Join(p.disk, "upper")
	p.work = filepath.Join(p.disk, "work")
	return p
}

func containerID(key string) string { return "sandboxd-" + key }

// cgroupPath is the cgroup of the sandbox with key.
func (m *Manager) cgroupPath(key string) string { return "/" + m.opts.CgroupParent + "/" + key }

// startLocked makes sure b's container is running, starting (or
// restarting) it if needed, and records the outcome. Starting a sleeping
// or stopped sandbox is a wake.
func (m *Manager) startLocked(ctx context.Context, b *box) error {
	if b.moving != "" {
		return &MovingError{ID: b.id, Node: b.moving}
	}
	if b.state() == StatusRunning {
		if b.running != nil && b.running.alive() {
			return nil
		}
		m.log.Warn("sandbox container died; restarting it", "sandbox", b.id)
		if err := m.failLocked(ctx, b, "the sandbox's container died; the next call starts it again"); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	if err := requireStatus(b, "start", StatusCreating, StatusSleeping, StatusPaused, StatusStopped, StatusFailed); err != nil {
		return err
	}
	if b.state() != StatusCreating {
		if err := m.checkLost(ctx, b); err != nil {
			return err
		}
	}
	waking := b.state() == StatusSleeping || b.state() == StatusStopped
	resuming := b.state() == StatusPaused
	if err := m.enterBoot(ctx); err != nil {
		m.failCreate(ctx, b, err)
		return err
	}
	if err := m.reserve(ctx, b); err != nil {
		m.leaveBoot()
		m.failCreate(ctx, b, err)
		return err
	}
	start := m.now()
	inst, err := m.boot(ctx, b)
	m.bootEnded()
	m.leaveBoot()
	if err != nil {
		m.release(b)
		m.log.Error("sandbox failed to start", "sandbox", b.id, "err", err)
		reason := err.Error()
		if resuming {
			// A checkpoint that did not restore is not tried again: the
			// next call starts the sandbox afresh, from its files.
			m.dropCheckpoint(b)
			reason = "restoring its memory failed (memory and processes are lost; files are kept): " + reason
		}
		if m.changeStatus(ctx, b, StatusFailed, reason) == nil {
			m.emit(b, EventFailed)
		}
		if errors.Is(err, ErrImageNotFound) || errors.Is(err, ErrCapacity) || errors.Is(err, ErrRuntimeUnavailable) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrFailed, err)
	}
	if resuming {
		if err := m.markRestored(b); err != nil {
			m.log.Warn("setting a restored checkpoint aside", "sandbox", b.id, "err", err)
		}
	}
	if err := m.changeStatus(ctx, b, StatusRunning, ""); err != nil {
		// A container the registry does not know of would outlive a
		// daemon restart unseen: stop it, and keep the old status.
		b.running = inst
		if terr := m.teardown(ctx, b); terr != nil {
			m.log.Error("stopping a sandbox whose start could not be recorded", "sandbox", b.id, "err", terr)
		}
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	b.running = inst
	m.restoreMounts(ctx, b)
	m.restoreBackups(ctx, b)
	b.touch(m.now())
	took := m.now().Sub(start)
	go m.watch(b, inst)
	if resuming {
		m.dropCheckpoint(b)
		m.m.resumes.Inc("")
		m.m.resumeSeconds.Observe(took.Seconds())
		m.emit(b, EventResumed)
	} else if waking {
		m.m.wakes.Inc("")
		m.m.wakeSeconds.Observe(took.Seconds())
		m.emit(b, EventWoke)
	} else {
		m.m.starts.Inc("")
		m.m.startSeconds.Observe(took.Seconds())
		m.emit(b, EventStarted)
	}
	m.log.Info("sandbox started", "sandbox", b.id, "runtime", b.runtimeName(), "wake", waking, "resume", resuming, "took", took)
	m.prefetchIDs(b.rec.HostUIDBase)
	return nil
}

// watch notices when a running sandbox's agent dies on its own (killed,
// crashed, its processes killed from outside): in-flight calls fail with
// their connections, and the sandbox is marked failed so that the next
// call starts it again.
func (m *Manager) watch(b *box, inst *instance) {
	if !inst.waitExit() {
		return // torn down on purpose
	}
	status := inst.exitStatus() // before the lock: it may wait for the reaping
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running != inst || b.destroyed {
		return
	}
	m.log.Warn("sandbox agent exited unexpectedly; the next call restarts the sandbox", "sandbox", b.id,
		"status", status, "agent_log", logTail(m.paths(b.rec.Key).log))
	m.failLocked(context.Background(), b, "the sandbox's agent exited unexpectedly; the next call starts the sandbox again")
}

// boot starts b's container: network, overlay, cgroups, container, agent.
// On failure everything it did is undone. A paused sandbox whose container
// was created ahead (resume.go) is restored into it.
func (m *Manager) boot(ctx context.Context, b *box) (*instance, error) {
	if b.unsettled {
		// Resumed before its pause was done with it (resume.go).
		if err := m.teardown(ctx, b); err != nil {
			return nil, err
		}
	}
	if b.prepared != nil {
		inst, err := m.resumePrepared(ctx, b)
		if err == nil {
			return inst, nil
		}
		m.log.Warn("restoring into the container created ahead failed; restoring afresh", "sandbox", b.id, "err", err)
		if terr := m.teardown(ctx, b); terr != nil {
			return nil, errors.Join(err, terr)
		}
	}
	return m.bootAs(ctx, b, bootStart)
}

// bootMode says how far bootAs goes.
type bootMode int

const (
	// bootStart starts the container (or restores a paused one) and
	// waits for its agent.
	bootStart bootMode = iota
	// bootPrepare only creates the container of a paused gVisor sandbox,
	// for its resume to restore into (resume.go).
	bootPrepare
)

func (m *Manager) bootAs(ctx context.Context, b *box, mode bootMode) (_ *instance, err error) {
	key := b.rec.Key
	p := m.paths(key)
	if b.cfg.Limits.DiskBytes > 0 {
		p = p.withQuota()
	}
	rt, err := m.runtimeOf(b)
	if err != nil {
		return nil, err
	}
	img, err := m.opts.Images.Resolve(ctx, imageRef(b.cfg))
	if err != nil {
		return nil, err
	}
	ids := b.hostIDs()
	var userns *rootfs.PendingUserNS
	if ids != nil {
		// The namespace the layers are idmapped with and the runtime
		// joins: opened ahead (prefetchIDs), else while the network is set
		// up (it takes processes). This start's alone: rootfs.UserNSCache.
		userns = m.userns.Take(*ids)
		defer userns.Close()
	}
	var undo cleanupStack
	defer func() {
		if err != nil {
			if cerr := undo.run(); cerr != nil {
				m.log.Error("undoing failed sandbox start", "sandbox", b.id, "err", cerr)
			}
		}
	}()
	for _, d := range []string{p.dir, p.run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	undo.push(func(context.Context) error { return m.removeRunDir(p.run) })
	sock, err := m.agentSocket(b, p)
	if err != nil {
		return nil, err
	}
	defer sock.close() // the container has its own copy

	steps := newStepTimer()
	defer func() {
		msg := "sandbox boot"
		if mode == bootPrepare {
			msg = "sandbox created ahead of its resume"
		}
		m.log.Debug(msg, "sandbox", b.id, "steps", steps.String(), "err", err)
	}()
	// The network is set up beside the overlay, the cgroups and /etc
	// (separate kernel objects, none needing another) and waited for
	// before the bundle names its namespace.
	net := m.attachNetwork(ctx, key, m.networkRequest(b))
	undo.push(func(ctx context.Context) error {
		if _, err := net.wait(); err != nil {
			return nil // nothing was attached
		}
		return m.opts.Network.Detach(ctx, key)
	})

	if b.cfg.Limits.DiskBytes > 0 {
		if err := mountDisk(ctx, p, b.cfg.Limits.DiskBytes); err != nil {
			return nil, err
		}
		undo.push(func(ctx context.Context) error { return m.unmountDisk(ctx, p) })
	}
	layers, err := m.snapshotLayers(b, img.Layers)
	if err != nil {
		return nil, err
	}
	ov := rootfs.Overlay{Layers: layers, Upper: p.upper, Work: p.work, Target: p.rootfs, IDs: ids, UserNS: userns}
	if err := m.opts.Mounts.MountOverlay(ov); err != nil {
		return nil, err
	}
	steps.mark("overlay")
	undo.push(func(context.Context) error { return m.opts.Mounts.Unmount(ov.Target, 0) })

	cg := m.opts.Cgroups.Group(m.cgroupPath(key))
	// gVisor's sentry runs the whole sandbox inside its own kernel, in
	// one host cgroup: the user/agent split (a host cgroup that user code
	// joins) has no meaning there, and the sandbox's limit applies to the
	// sandbox as a whole.
	var cgMounts []specs.Mount
	// splitAfterCreate: the split needs the created container's init (cgroup
	// v2), so create and start are two runtime processes with the split
	// between them. Otherwise (v1, or gVisor with no split) nothing happens
	// between them and one `run --detach` does both: a crun process less.
	splitAfterCreate := false
	if !b.isGVisor() {
		if cgMounts, err = cg.PrepareUser(); err != nil {
			return nil, err
		}
		if err := giveToRange(cgMounts, b.hostIDs()); err != nil {
			return nil, err
		}
		splitAfterCreate = cg.SplitNeedsInit()
	}
	undo.push(func(context.Context) error { return cg.Remove() })
	if !b.isGVisor() && !splitAfterCreate {
		// Before the runtime runs: S/user is limited before init exists,
		// let alone anything that could join S/user.
		if err := cg.Split(0, userLimits(b.cfg.Limits)); err != nil {
			return nil, err
		}
	}

	if err := initEtc(p, tenant.Local(b.id), b.cfg.Network.Mode, m.opts.Network.DNS(), rootOwner(b.hostIDs())); err != nil {
		return nil, err
	}
	vols, err := m.volumeMounts(ctx, b)
	if err != nil {
		return nil, err
	}
	extra := append(cgMounts, vols...)
	if m.opts.ProcViews != nil && !b.isGVisor() {
		// gVisor's own /proc describes the sandbox already; a FUSE file
		// would reach it only through the gofer.
		extra = append(extra, m.opts.ProcViews.Mounts(ctx)...)
	}
	if b.isGVisor() {
		buckets, err := m.gvisorBuckets(key)
		if err != nil {
			return nil, err
		}
		undo.push(func(context.Context) error { return m.releaseMounts(key) })
		extra = append(extra, buckets)
	}
	waited := time.Now()
	ep, err := net.wait()
	steps.add("network", time.Since(waited))
	if err != nil {
		return nil, fmt.Errorf("setting up network: %w", err)
	}
	// writeBundle mounts the sandbox's own sysfs (user namespaces): a
	// start that fails after it, or is cancelled (a daemon stopping while
	// its pool starts), must not leave the mount behind.
	undo.push(func(context.Context) error { return removeSysfs(p.sysfs) })
	hostPaths, err := m.writeBundle(b, rt, img, p, ep, sock, extra, userns)
	if err != nil {
		return nil, err
	}
	steps.mark("bundle")
	logf, err := openLog(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()

	cid := containerID(key)
	rt.Delete(ctx, cid) // a leftover of a crash
	// A sandbox with nothing to do between create and start (gVisor: no
	// cgroup split; cgroup v1: the split was made above) is created and
	// started by one `run --detach`; a paused one is restored instead.
	// Undone even if the create fails: one killed part way (the daemon
	// stopping while its pool starts a sandbox) leaves the runtime's state
	// of the container behind.
	undo.push(func(ctx context.Context) error { return m.stopContainer(ctx, rt, cid, cg) })
	var bound *socketWatch
	if b.isGVisor() && mode == bootStart {
		// Before the container starts, so that the socket's creation is
		// seen whenever it comes (see socketWatch).
		bound = watchSocketDir(p.run)
		defer bound.close()
	}
	pid, restored, err := m.createOrRestore(ctx, b, rt, cid, p, mode, runtime.CreateOptions{Log: logf, ExtraFiles: sock.files, Start: !splitAfterCreate && mode == bootStart, HostPaths: hostPaths})
	if err != nil {
		return nil, err
	}
	steps.mark("create")
	failpoint.Hit("boot-after-create")
	if splitAfterCreate {
		if err := cg.Split(pid, userLimits(b.cfg.Limits)); err != nil {
			return nil, err
		}
		if err := rt.Start(ctx, cid); err != nil {
			return nil, err
		}
		steps.mark("start")
	}
	inst, err := newInstance(cid, pid, ep, m.agents, p.socket)
	if err != nil {
		return nil, err
	}
	undo.push(func(context.Context) error { inst.close(); return nil })
	if mode == bootPrepare {
		return inst, nil
	}
	if restored {
		// The agent let go of its socket before the checkpoint.
		err = wakeRestored(ctx, rt, inst, bound)
	} else {
		err = waitAgentWatched(ctx, inst, bound, agentBootTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (agent log: %s)", err, logTail(p.log))
	}
	steps.mark("agent")
	if restored && m.forkRestores(b) {
		if err := m.forkIdentity(ctx, b, rt, inst, m.specEnv(b, img)); err != nil {
			return nil, err
		}
		steps.mark("identity")
	}
	return inst, nil
}

func (m *Manager) networkRequest(b *box) NetworkRequest {
	n := b.cfg.Network
	req := NetworkRequest{
		Mode: n.Mode, Slot: int(b.netSlot.Load() - 1), SandboxID: b.id,
		AllowDomains: n.AllowDomains, DenyDomains: n.DenyDomains, DefaultDeny: n.Default == EgressDeny,
	}
	prefixes := func(ss []string) (out []netip.Prefix) {
		for _, s := range ss {
			if pfx, err := netip.ParsePrefix(s); err == nil {
				out = append(out, pfx)
			}
		}
		return out
	}
	req.AllowCIDRs, req.AllowHostCIDRs, req.DenyCIDRs = prefixes(n.AllowCIDRs), prefixes(n.AllowHostCIDRs), prefixes(n.DenyCIDRs)
	return req
}

// userLimits are the limits of the user sub-cgroup: the sandbox's, minus
// what the agent keeps for itself.
func userLimits(l Limits) cgroup.UserLimits {
	reserve := int64(agentReserveBytes)
	if reserve > l.MemoryBytes/2 {
		reserve = l.MemoryBytes / 2
	}
	pids := l.Pids - agentReservePids
	if pids < agentReservePids {
		pids = agentReservePids
	}
	return cgroup.UserLimits{MemoryBytes: l.MemoryBytes - reserve, Pids: pids}
}

func (m *Manager) writeBundle(b *box, rt Runtime, img *rootfs.Image, p paths, ep NetworkEndpoint, sock agentSocket, extra []specs.Mount, userns *rootfs.PendingUserNS) ([]string, error) {
	ids := b.hostIDs()
	mounts := idmapMounts(img.Mounts, ids)
	mounts = append(mounts,
		specs.Mount{Destination: runtime.AgentPath, Type: "bind", Source: m.opts.AgentPath,
			Options: []string{"bind", "ro", "nosuid", "nodev"}},
	)
	args := agentArgs(img, sock.args)
	if m.opts.SpawnPath != "" && !b.isGVisor() {
		// gVisor sandboxes start programs without the wrapper.
		mounts = append(mounts, specs.Mount{Destination: runtime.SpawnPath, Type: "bind", Source: m.opts.SpawnPath,
			Options: []string{"bind", "ro", "nosuid", "nodev"}})
		args = append(args, "--spawn", runtime.SpawnPath)
	}
	if m.mountsTranspiler(b, p) {
		// The agent finds it there by itself: no flag, so that the command
		// line of a gVisor checkpoint made before the helper still matches.
		mounts = append(mounts, specs.Mount{Destination: runtime.TranspilePath, Type: "bind", Source: m.opts.TranspilePath,
			Options: []string{"bind", "ro", "nosuid", "nodev"}})
	}
	mounts = append(mounts, sock.mounts...)
	mounts = append(mounts, extra...)
	var procOptions []string
	if !b.isGVisor() {
		procOptions = runtime.HidePIDOptions
	}
	opts := runtime.SpecOptions{
		ProcOptions: procOptions,
		Hostname:    tenant.Local(b.id),
		Rootfs:      rootPath(p, ids),
		Args:        args,
		Env:         m.specEnv(b, img),
		Mounts:      mounts,
		NetnsPath:   ep.NetnsPath,
		CgroupsPath: m.cgroupPath(b.rec.Key),
		Resources: runtime.Resources{
			MemoryBytes: b.cfg.Limits.MemoryBytes, MilliCPU: b.cfg.Limits.MilliCPU, Pids: b.cfg.Limits.Pids,
			CPUs: cpusFor(b.rec.Key, b.cfg.Limits.MilliCPU, m.hostCPUs),
		},
		Annotations: annotations(b.id, rt.Annotations()),
	}
	if ids != nil {
		opts.HostUIDBase = ids.Base
		ns, err := userns.Wait()
		if err != nil {
			return nil, err
		}
		// The runtime opens it while the daemon holds it (until the start
		// returns).
		opts.UserNSPath = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
		opts.Sysfs = p.sysfs
		if err := rootfs.MountSysfs(ep.NetnsPath, opts.Sysfs); err != nil {
			return nil, err
		}
	}
	spec, err := runtime.NewSpec(opts)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(p.bundle, 0o700); err != nil {
		return nil, err
	}
	if err := letRangeReachRoot(p, ids); err != nil {
		return nil, err
	}
	return runtime.SpecHostPaths(p.bundle, spec), os.WriteFile(filepath.Join(p.bundle, "config.json"), data, 0o600)
}

// specEnv is the environment of b's agent: the image's, HOSTNAME, the
// sandbox's own variables, and what the image's main process needs.
func (m *Manager) specEnv(b *box, img *rootfs.Image) []string {
	return append(mergeEnv(append(slices.Clip(img.Env), "HOSTNAME="+tenant.Local(b.id)), b.cfg.Env), mainEnv(img)...)
}

func annotations(id string, runtime map[string]string) map[string]string {
	a := map[string]string{"dev.sandboxd.id": id}
	for k, v := range runtime {
		a[k] = v
	}
	return a
}

// mergeEnv lays env over the image's environment, sorted by name.
func mergeEnv(image []string, env map[string]string) []string {
	merged := map[string]string{}
	for _, kv := range image {
		if k, v, ok := strings.Cut(kv, "="); ok {
			merged[k] = v
		}
	}
	for k, v := range env {
		merged[k] = v
	}
	out := make([]string, 0, len(merged))
	for k, v := range merged {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// maxLogBytes bounds an agent log: it is truncated at start when larger.
const maxLogBytes = 1 << 20

func openLog(path string) (*os.File, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > maxLogBytes {
		os.Truncate(path, 0)
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
}

func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := fi.Size() - 1024
	if off < 0 {
		off = 0
	}
	data, _ := io.ReadAll(io.NewSectionReader(f, off, 1024))
	return strings.TrimSpace(string(data))
}

// waitAgent polls the agent's health endpoint until it answers, the
// container dies, or limit passes, and checks the protocol version.
func waitAgent(ctx context.Context, inst *instance, limit time.Duration) error {
	return waitAgentWatched(ctx, inst, nil, limit)
}

// watchedWaitCap bounds each wait for the agent's socket to appear, so
// that an agent that dies before it binds it is seen dead in time. Not
// shorter: each time it passes, the daemon wakes from idle to dial in
// vain, and Go's monitor thread with it (a burst of wake-ups; see
// internal/runtime's monitor.go), while the agent it waits for starts on
// the same two CPUs; it binds its socket 20-100 ms after runsc returns.
const watchedWaitCap = 250 * time.Millisecond

// waitAgentWatched is waitAgent for an agent that binds its socket
// itself: while the socket does not exist, it waits for w (a watch of
// its directory, set before the container started; nil to poll) to see
// it created instead of dialling again and again.
func waitAgentWatched(ctx context.Context, inst *instance, w *socketWatch, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	// Poll fast at first: the agent is usually up within milliseconds,
	// and every millisecond here is a millisecond of cold start.
	delay := time.Millisecond
	started := time.Now()
	for {
		h, err := inst.agent.Health(ctx)
		if err == nil {
			if h.ProtocolVersion != api.ProtocolVersion {
				return fmt.Errorf("agent speaks protocol %d, this daemon speaks %d", h.ProtocolVersion, api.ProtocolVersion)
			}
			return nil
		}
		if !inst.alive() {
			return fmt.Errorf("agent exited during start-up")
		}
		if w.usable() && notBound(err) && ctx.Err() == nil {
			w.wait(watchedWaitCap)
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent did not answer within %s: %w", limit, err)
		case <-time.After(delay):
		}
		if time.Since(started) > 200*time.Millisecond && delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

// stopContainer kills every process of the container, empties and removes
// its sub-cgroups, deletes the container and removes what is left of its
// cgroup. Each step tolerates an absent container, or one whose init has
// died. RemoveChildren kills the whole tree, init too, and the runtime's
// delete kills init again, so no runtime state or kill comes first (two
// runtime processes per destroy less).
func (m *Manager) stopContainer(ctx context.Context, rt Runtime, cid string, cg Cgroup) error {
	return errors.Join(cg.RemoveChildren(), rt.Delete(ctx, cid), cg.Remove())
}

// teardown stops b's container and releases its mounts, network and run
// directory, leaving its persistent files. It is safe on a sandbox that is
// partly or not at all set up.
func (m *Manager) teardown(ctx context.Context, b *box) error {
	key := b.rec.Key
	p := m.paths(key)
	if b.running != nil {
		b.running.close()
		b.running = nil
		m.release(b)
	}
	m.dropPrepared(b)
	b.unsettled = false
	var errs []error
	for _, rt := range m.runtimesOf(b) {
		errs = append(errs, m.stopContainer(ctx, rt, containerID(key), m.opts.Cgroups.Group(m.cgroupPath(key))))
	}
	errs = append(errs,
		m.releaseMounts(key),
		m.releaseRestores(key),
		m.opts.Mounts.Unmount(p.rootfs, 2*time.Second),
		rootfs.UnmountIDMapped(p.dir),
		m.unmountDisk(ctx, p),
		m.opts.Network.Detach(ctx, key),
		m.removeRunDir(p.run),
		removeSysfs(p.sysfs),
	)
	m.prefetchAfterTeardown(b)
	return errors.Join(errs...)
}

// agentSocket is how a sandbox's agent gets its socket: a listening
// descriptor (files, for the runtime to pass on), or, on gVisor, a
// directory bind-mounted into the sandbox (mounts) where it binds one.
type agentSocket struct {
	files  []*os.File
	mounts []specs.Mount
	args   []string
}

func (s agentSocket) close() {
	for _, f := range s.files {
		f.Close()
	}
}

// agentSocket prepares b's agent socket at p.socket.
func (m *Manager) agentSocket(b *box, p paths) (agentSocket, error) {
	if b.isGVisor() {
		if err := mountRunDir(p.run); err != nil {
			return agentSocket{}, err
		}
		os.Remove(p.socket)
		return agentSocket{
			mounts: []specs.Mount{{Destination: runtime.GVisorRunDir, Type: "bind", Source: p.run,
				Options: []string{"bind", "rw", "nosuid", "nodev", "noexec"}}},
			args: []string{"--socket", runtime.GVisorAgentSocket},
		}, nil
	}
	f, err := listenAgent(p.socket)
	if err != nil {
		return agentSocket{}, err
	}
	return agentSocket{files: []*os.File{f}, args: []string{"--listen-fd", strconv.Itoa(runtime.AgentListenFD)}}, nil
}

// runDirOptions make a gVisor agent's socket directory a tiny filesystem
// of its own: it is writable from inside, and must not fill the host's
// /run (a tmpfs in host memory).
const runDirOptions = "size=64k,nr_inodes=64,mode=0700"

func mountRunDir(dir string) error {
	if mounted, err := rootfs.IsMountPoint(dir); err == nil && mounted {
		return nil
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, runDirOptions); err != nil {
		return fmt.Errorf("mounting the agent's socket directory: %w", err)
	}
	return nil
}

// listenAgent binds the agent's socket at path, on the host, and returns
// the listening socket for the container's init (runtime.AgentListenFD).
// The socket's directory is never mounted into the sandbox: root in the
// sandbox used to be able to unlink the socket in its bind-mounted
// directory and listen in its place, and the daemon then dialled the
// impostor. The path outlives a daemon restart, so a restarted daemon
// reaches the same agent by it.
func listenAgent(path string) (*os.File, error) {
	os.Remove(path)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("agent socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		f.Close()
		return nil, fmt.Errorf("binding the agent socket %s: %w", path, err)
	}
	if err := errors.Join(os.Chmod(path, 0o600), unix.Listen(fd, 128)); err != nil {
		f.Close()
		return nil, fmt.Errorf("listening on the agent socket %s: %w", path, err)
	}
	return f, nil
}

// removeRunDir removes a sandbox's socket directory, unmounting its tmpfs
// (gVisor sandboxes, and sandboxes of daemons before listenAgent).
func (m *Manager) removeRunDir(dir string) error {
	return errors.Join(m.opts.Mounts.Unmount(dir, time.Second), os.RemoveAll(dir))
}

// removeFiles deletes a sandbox's persistent files. The overlay must be
// unmounted: deleting through a mounted root would walk into the image.
func (m *Manager) removeFiles(key string) error {
	p := m.paths(key)
	if mounted, err := rootfs.IsMountPoint(p.rootfs); err == nil && mounted {
		return fmt.Errorf("root of %s is still mounted", key)
	}
	// Its image layers, idmapped below its directory, are read-only
	// mounts; they are detached here in case a teardown could not.
	if err := rootfs.UnmountIDMapped(p.dir); err != nil {
		return err
	}
	return os.RemoveAll(p.dir)
}

// stepTimer records how long each step of a boot took, for the debug log.
type stepTimer struct {
	last  time.Time
	steps []string
}

func newStepTimer() *stepTimer { return &stepTimer{last: time.Now()} }

func (t *stepTimer) mark(name string) {
	now := time.Now()
	t.steps = append(t.steps, fmt.Sprintf("%s=%s", name, now.Sub(t.last).Round(100*time.Microsecond)))
	t.last = now
}

// add records a step of d that overlapped the current one (a wait for
// work started beside it), and leaves it out of the current one.
func (t *stepTimer) add(name string, d time.Duration) {
	t.steps = append(t.steps, fmt.Sprintf("%s=%s", name, d.Round(100*time.Microsecond)))
	t.last = t.last.Add(d)
}

func (t *stepTimer) String() string { return strings.Join(t.steps, " ") }

// pendingNetwork is a network attach running beside the rest of a boot.
// Its boot always waits for it: at the bundle, or in its undo on failure.
type pendingNetwork struct {
	done chan struct{}
	ep   NetworkEndpoint
	err  error
}

func (m *Manager) attachNetwork(ctx context.Context, key string, req NetworkRequest) *pendingNetwork {
	n := &pendingNetwork{done: make(chan struct{})}
	go func() {
		defer close(n.done)
		n.ep, n.err = m.opts.Network.Attach(ctx, key, req)
	}()
	return n
}

func (n *pendingNetwork) wait() (NetworkEndpoint, error) {
	<-n.done
	return n.ep, n.err
}
