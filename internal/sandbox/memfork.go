package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/rename"
	"github.com/sandboxd/sandboxd/internal/failpoint"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/tenant"
	"golang.org/x/sync/errgroup"
)

// Memory snapshots and forks (gVisor). A snapshot of a gVisor sandbox
// keeps, besides its files, a checkpoint of its kernel: memory, every
// process, shells and code contexts (runsc checkpoint --leave-running, so
// the sandbox runs on). A fork of it restores that checkpoint (runsc
// restore) on top of the snapshot's files, in its own network namespace,
// with its own bundle, cgroup and container, then takes its own identity:
// hostname and /etc/hostname, /etc/hosts (sandbox-agent rename, as for a
// warm gVisor sandbox), and an agent environment without what the parent
// was given through the API (agentapi.PathFork).
//
// The files and the memory must be of one moment: the sandbox is frozen
// (runsc pause) while the copy of its writable layer is brought up to date
// and the checkpoint is written, then thawed. As for pause, the agent lets
// go of its socket first (runsc cannot save a socket of the host) and
// binds it again afterwards, in the parent and in every fork.

// snapshotMemory decides whether a snapshot of b keeps its memory: on
// gVisor unless the caller wants the files alone; a caller who requires it
// elsewhere gets ErrMemoryUnsupported. A gVisor sandbox with bucket
// mounts cannot be checkpointed (their FUSE files do not restore), so its
// snapshots keep files alone unless memory was required.
func (m *Manager) snapshotMemory(b *box, o SnapshotOptions) (bool, error) {
	if o.FilesystemOnly {
		return false, nil
	}
	if !b.isGVisor() {
		if o.Memory {
			return false, m.memoryUnsupported(b)
		}
		return false, nil
	}
	if len(m.mountFiles(b.rec.Key).load()) > 0 {
		if o.Memory {
			return false, fmt.Errorf("%w: a gVisor sandbox with bucket mounts cannot be checkpointed; unmount them first, or take a filesystem-only snapshot", ErrMemoryUnsupported)
		}
		return false, nil
	}
	return true, nil
}

// copyCheckpointed copies b's writable layer and checkpoints its memory
// into a new directory of the snapshot store, both of the same moment: the
// copy is made while the sandbox runs, then brought up to date and the
// checkpoint written while it is frozen. It returns the copy, the
// checkpoint's directory and how long the sandbox was frozen. b.mu is
// held; b runs on gVisor and is running.
func (m *Manager) copyCheckpointed(ctx context.Context, b *box) (_ *snapshot.Copy, _ string, frozen time.Duration, err error) {
	rt, err := m.runtimeOf(b)
	if err != nil {
		return nil, "", 0, err
	}
	st := m.opts.Snapshots
	p := m.paths(b.rec.Key)
	if b.cfg.Limits.DiskBytes > 0 {
		p = p.withQuota()
	}
	inst := b.running
	since := time.Now().Add(-time.Second) // see copyFrozen
	cp, err := st.CopyLayer(ctx, p.upper, agentStateDir)
	if err != nil {
		return nil, "", 0, err
	}
	image, err := st.NewMemoryDir()
	if err != nil {
		cp.Discard()
		return nil, "", 0, err
	}
	defer func() {
		if err != nil {
			cp.Discard()
			os.RemoveAll(image)
		}
	}()
	if err := m.suspendAgent(ctx, inst, p.socket); err != nil {
		m.resumeAgent(ctx, rt, inst)
		return nil, "", 0, fmt.Errorf("%w: snapshotting %s: %w", ErrUnavailable, b.id, err)
	}
	// From here on the sandbox must run on, with its agent, whatever the
	// caller does.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := rt.Pause(cctx, inst.cid); err != nil {
		m.resumeAgent(cctx, rt, inst)
		return nil, "", 0, fmt.Errorf("freezing %s: %w", b.id, err)
	}
	failpoint.Hit("snapshot-frozen")
	_, cerr := cp.Refresh(cctx, p.upper, since, agentStateDir)
	if cerr == nil {
		cerr = rt.Checkpoint(cctx, inst.cid, image, runtime.CheckpointOptions{LeaveRunning: true})
	}
	if cerr == nil {
		if err := markTranspiler(p.bundle, image); err != nil {
			m.log.Warn("noting the TypeScript helper beside a memory snapshot failed; its forks will start from files", "sandbox", b.id, "err", err)
		}
	}
	rerr := rt.Resume(cctx, inst.cid)
	frozen = time.Since(start)
	aerr := m.resumeAgent(cctx, rt, inst)
	if rerr != nil || aerr != nil {
		m.log.Error("thawing a sandbox after a memory snapshot", "sandbox", b.id, "thaw", rerr, "agent", aerr)
		if !inst.alive() {
			ferr := m.failLocked(ctx, b, "a memory snapshot took the sandbox down; the next call starts it again")
			return nil, "", 0, errors.Join(fmt.Errorf("%w: snapshotting %s took it down", ErrFailed, b.id), cerr, ferr)
		}
	}
	if cerr != nil {
		return nil, "", 0, fmt.Errorf("%w: snapshotting %s: %w", ErrFailed, b.id, cerr)
	}
	if rerr != nil || aerr != nil {
		return nil, "", 0, fmt.Errorf("%w: %s did not come back after its snapshot: %w", ErrFailed, b.id, errors.Join(rerr, aerr))
	}
	if ids := b.hostIDs(); ids != nil {
		if err := cp.ShiftOwners(ids.Base); err != nil {
			return nil, "", 0, err
		}
	}
	m.log.Debug("memory snapshot written while frozen", "sandbox", b.id, "frozen", frozen, "bytes", dirSize(image))
	return cp, image, frozen, nil
}

// forkRestores reports whether b's next start restores its snapshot's
// memory: a fork of a memory snapshot, on its first start. Later starts
// (a failed restore, a stop, a sleep without memory) boot from its files.
func (m *Manager) forkRestores(b *box) bool {
	return b.cfg.SnapshotMemory && b.state() == StatusCreating && m.opts.Snapshots != nil
}

// restoreFork starts the fork b's container from its snapshot's memory
// image, which stays the snapshot's (every fork reads it).
func (m *Manager) restoreFork(ctx context.Context, b *box, rt Runtime, cid string, p paths, opts runtime.CreateOptions) (int, error) {
	pid, err := rt.Restore(ctx, cid, p.bundle, m.opts.Snapshots.MemoryPath(b.cfg.Snapshot), opts)
	if err != nil {
		return 0, fmt.Errorf("restoring snapshot %s: %w", b.cfg.Snapshot, err)
	}
	return pid, nil
}

// forkIdentity gives a restored fork its own identity once its agent
// answers: the hostname in gVisor's UTS namespace with /etc/hostname and
// /etc/hosts, and the agent's environment: the fork's own, without
// anything the parent was given through the API.
func (m *Manager) forkIdentity(ctx context.Context, b *box, rt Runtime, inst *instance, env []string) error {
	// Independent round trips into the sandbox: at once, as adopt does.
	var g errgroup.Group
	g.Go(func() error {
		if err := rt.ExecAdmin(ctx, inst.cid, runtime.AgentPath, rename.Arg, tenant.Local(b.id)); err != nil {
			return fmt.Errorf("naming the fork: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := inst.agent.Fork(ctx, env); err != nil {
			return fmt.Errorf("giving the fork's agent its environment: %w", err)
		}
		return nil
	})
	return g.Wait()
}
