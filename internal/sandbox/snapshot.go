package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sandboxd/sandboxd/internal/failpoint"
	"github.com/sandboxd/sandboxd/internal/snapshot"
)

// ErrMemoryUnsupported: memory and processes were asked to be kept, and
// the sandbox's runtime cannot (CRIU does not work on this kernel, so only
// gVisor could).
var ErrMemoryUnsupported = errors.New("memory snapshots are not supported")

// agentStateDir is the agent's persistent state in a sandbox's root
// (agent.DefaultStateDir): sessions, the sandbox's env (which may carry
// the parent's secrets) and process records. A fork starts without it.
const agentStateDir = "var/lib/sandboxd-agent"

// SnapshotOptions are what Snapshot takes besides the sandbox and name.
// Without either, a snapshot keeps memory and processes where the runtime
// can (gVisor) and files alone elsewhere.
type SnapshotOptions struct {
	// Memory requires memory and processes as well as files:
	// ErrMemoryUnsupported where the runtime cannot keep them.
	Memory bool
	// FilesystemOnly keeps the files alone, on any runtime.
	FilesystemOnly bool
}

// Snapshots is the snapshot store; nil when the daemon has none.
func (m *Manager) Snapshots() *snapshot.Store { return m.opts.Snapshots }

// Snapshot takes a snapshot called name of the sandbox id's files: the
// container is frozen while its writable layer is copied, then thawed; the
// copy is hashed and installed as a content-addressed layer afterwards,
// while the sandbox runs on. A sleeping or stopped sandbox is started
// first (a disk with a quota is only readable while mounted).
func (m *Manager) Snapshot(ctx context.Context, id, name string, o SnapshotOptions) (snapshot.Snapshot, error) {
	st := m.opts.Snapshots
	if st == nil {
		return snapshot.Snapshot{}, fmt.Errorf("%w: this daemon keeps no snapshots", ErrUnsupported)
	}
	if err := snapshot.ValidateName(name); err != nil {
		return snapshot.Snapshot{}, err
	}
	if st.Exists(name) {
		return snapshot.Snapshot{}, fmt.Errorf("%w: %s", snapshot.ErrExists, name)
	}
	b, err := m.lockExisting(id)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	defer b.mu.Unlock()
	if o.Memory && o.FilesystemOnly {
		return snapshot.Snapshot{}, invalid("memory and filesystemOnly exclude each other")
	}
	memory, err := m.snapshotMemory(b, o)
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	if err := m.startLocked(ctx, b); err != nil {
		return snapshot.Snapshot{}, err
	}
	b.touch(m.now())
	var cp *snapshot.Copy
	var frozen time.Duration
	var image string
	if memory {
		cp, image, frozen, err = m.copyCheckpointed(ctx, b)
	} else {
		cp, frozen, err = m.copyFrozen(ctx, b)
	}
	if err != nil {
		return snapshot.Snapshot{}, err
	}
	sealed, err := cp.Seal(ctx)
	if err != nil {
		os.RemoveAll(image)
		return snapshot.Snapshot{}, fmt.Errorf("sealing snapshot %s: %w", name, err)
	}
	snap := snapshot.Snapshot{
		Name: name, Sandbox: b.id, Image: b.cfg.Image, ImageDigest: b.cfg.ImageDigest, Runtime: b.runtimeName(),
		Layer: sealed.Layer, Size: sealed.Size, Files: sealed.Files, Memory: memory, Frozen: frozen, CreatedAt: m.now().UTC(),
	}
	if memory {
		if err := st.AddMemory(name, image); err != nil {
			os.RemoveAll(image)
			return snapshot.Snapshot{}, err
		}
	}
	if err := st.Add(snap); err != nil {
		return snapshot.Snapshot{}, err
	}
	m.log.Info("snapshot taken", "sandbox", b.id, "snapshot", name, "layer", sealed.Layer, "bytes", sealed.Size, "memory", memory, "frozen", frozen)
	return snap, nil
}

// memoryUnsupported is the error for a memory snapshot or pause of b,
// which does not run on gVisor.
func (m *Manager) memoryUnsupported(b *box) error {
	return fmt.Errorf("%w: sandbox %s runs on %s, whose processes cannot be checkpointed on this host (CRIU); take a filesystem snapshot, or use --runtime gvisor",
		ErrMemoryUnsupported, b.id, b.runtimeName())
}

// copyFrozen copies b's writable layer with its container frozen, and
// returns the copy and how long the container was frozen.
func (m *Manager) copyFrozen(ctx context.Context, b *box) (*snapshot.Copy, time.Duration, error) {
	rt, err := m.runtimeOf(b)
	if err != nil {
		return nil, 0, err
	}
	p := m.paths(b.rec.Key)
	if b.cfg.Limits.DiskBytes > 0 {
		p = p.withQuota()
	}
	cid := b.running.cid
	// Copy while the sandbox runs, then freeze it only to copy again what
	// changed meanwhile: the freeze lasts as long as the changes take to
	// copy, not the whole layer. (A second of slack: the kernel stamps
	// ctimes from a coarse clock.)
	since := time.Now().Add(-time.Second)
	cp, err := m.opts.Snapshots.CopyLayer(ctx, p.upper, agentStateDir)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	if err := rt.Pause(ctx, cid); err != nil {
		cp.Discard()
		return nil, 0, fmt.Errorf("freezing %s: %w", b.id, err)
	}
	failpoint.Hit("snapshot-frozen")
	refreshed, cerr := cp.Refresh(ctx, p.upper, since, agentStateDir)
	// Thaw with a context of its own: a caller that went away must not
	// leave the sandbox frozen.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	rerr := rt.Resume(rctx, cid)
	frozen := time.Since(start)
	if rerr != nil {
		m.log.Error("thawing sandbox after a snapshot", "sandbox", b.id, "err", rerr)
	}
	if cerr != nil {
		cp.Discard()
		return nil, 0, cerr
	}
	if ids := b.hostIDs(); ids != nil {
		// Layers are stored 0-based, whichever range they came from.
		if err := cp.ShiftOwners(ids.Base); err != nil {
			cp.Discard()
			return nil, 0, err
		}
	}
	if rerr != nil {
		cp.Discard()
		return nil, 0, fmt.Errorf("thawing %s: %w", b.id, rerr)
	}
	m.log.Debug("snapshot copy refreshed while frozen", "sandbox", b.id, "entries", refreshed, "frozen", frozen)
	return cp, frozen, nil
}

// ListSnapshots returns every snapshot.
func (m *Manager) ListSnapshots(ctx context.Context) ([]snapshot.Snapshot, error) {
	if m.opts.Snapshots == nil {
		return []snapshot.Snapshot{}, nil
	}
	return m.opts.Snapshots.List()
}

// GetSnapshot returns the snapshot name.
func (m *Manager) GetSnapshot(ctx context.Context, name string) (snapshot.Snapshot, error) {
	if m.opts.Snapshots == nil {
		return snapshot.Snapshot{}, fmt.Errorf("%w: %s", snapshot.ErrNotFound, name)
	}
	return m.opts.Snapshots.Get(name)
}

// RemoveSnapshot deletes the snapshot name unless a sandbox was forked
// from it (its layer is part of that sandbox's root).
func (m *Manager) RemoveSnapshot(ctx context.Context, name string) error {
	st := m.opts.Snapshots
	if st == nil {
		return fmt.Errorf("%w: %s", snapshot.ErrNotFound, name)
	}
	if _, err := st.Get(name); err != nil {
		return err
	}
	m.snapMu.Lock()
	defer m.snapMu.Unlock()
	infos, err := m.List(ctx)
	if err != nil {
		return err
	}
	var users []string
	for _, inf := range infos {
		if inf.Config.Snapshot == name {
			users = append(users, inf.ID)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("%w: sandboxes %v were created from %s; destroy them first", snapshot.ErrInUse, users, name)
	}
	m.dropForkPool(name)
	return st.Remove(name)
}

// fromSnapshot fills a fork's configuration from its snapshot: the
// snapshot's image (by digest) and runtime, which the caller may repeat
// but not change, and the layer. Everything else is the fork's own.
func (m *Manager) fromSnapshot(cfg Config) (Config, error) {
	if cfg.Snapshot == "" {
		return cfg, nil
	}
	st := m.opts.Snapshots
	if st == nil {
		return cfg, fmt.Errorf("%w: %s", snapshot.ErrNotFound, cfg.Snapshot)
	}
	snap, err := st.Get(cfg.Snapshot)
	if err != nil {
		return cfg, err
	}
	if cfg.Image != "" && cfg.Image != snap.Image {
		return cfg, invalid("image %q differs from snapshot %s's image %q; leave it out", cfg.Image, snap.Name, snap.Image)
	}
	if cfg.Runtime != "" && cfg.Runtime != snap.Runtime {
		return cfg, invalid("runtime %q differs from snapshot %s's runtime %q; leave it out", cfg.Runtime, snap.Name, snap.Runtime)
	}
	cfg.Image, cfg.Runtime, cfg.ImageDigest, cfg.SnapshotLayer = snap.Image, snap.Runtime, snap.ImageDigest, snap.Layer
	cfg.SnapshotMemory = snap.Memory
	return cfg, nil
}

// snapshotLayers are the layers of b's root: its image's, then, for a
// fork, its snapshot's on top.
func (m *Manager) snapshotLayers(b *box, layers []string) ([]string, error) {
	if b.cfg.SnapshotLayer == "" {
		return layers, nil
	}
	if m.opts.Snapshots == nil {
		return nil, fmt.Errorf("sandbox %s was created from snapshot %s, and this daemon keeps no snapshots", b.id, b.cfg.Snapshot)
	}
	return append(append([]string{}, layers...), m.opts.Snapshots.LayerPath(b.cfg.SnapshotLayer)), nil
}

// PauseOptions are what Pause takes besides the sandbox.
type PauseOptions struct {
	// FilesystemOnly pauses without memory: the container stops and its
	// files stay, exactly as Stop.
	FilesystemOnly bool
}

// Pause pauses the sandbox id with its memory and processes: a gVisor
// sandbox is checkpointed to disk (checkpoint.go); other runtimes cannot
// (ErrMemoryUnsupported). A paused sandbox stays paused. With
// FilesystemOnly it is Stop. Resume is Start.
func (m *Manager) Pause(ctx context.Context, id string, o PauseOptions) (Info, error) {
	if o.FilesystemOnly {
		return m.Stop(ctx, id)
	}
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	if !b.isGVisor() {
		return b.info(), m.memoryUnsupported(b)
	}
	if b.state() == StatusPaused {
		return b.info(), nil
	}
	err = m.pauseLocked(ctx, b, "paused by request")
	return b.info(), err
}
