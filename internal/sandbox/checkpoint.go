package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/failpoint"
	"github.com/sandboxd/sandboxd/internal/runtime"
)

// Pause with memory (gVisor): the sandbox is checkpointed to disk with
// runsc checkpoint, which saves its kernel's memory and every process and
// stops it, freeing its RAM; status paused. The next call (or resume)
// starts it again with runsc restore from the same bundle, processes,
// sessions' shells and code contexts as they were. Idle sleep and
// eviction of a gVisor sandbox pause it the same way.
//
// runsc refuses to save a sandbox that holds a socket of the host, and the
// agent's socket is one (--host-uds=create), so the agent first lets go of
// it (agentapi.PathSuspend: it closes its connections and its listener and
// unlinks the socket); a failed checkpoint kills the sandbox, so nothing
// of the host may be held when it starts. After the restore, or when the
// checkpoint failed and left the sandbox running, the agent binds its
// socket again: by itself once gVisor reports the checkpoint's end
// (internal/agent, suspend.go), or when told (agentapi.ResumeSignal,
// through runsc; wakeRestored).
//
// runsc takes the network's addresses from the network namespace and
// removes them from it when it starts a sandbox, so a restore needs a
// namespace set up afresh: the pause tears down everything but the files
// (as sleep does), and the restore is a boot that restores instead of
// creating.
//
// Crash safety: the status becomes paused only once the checkpoint is
// complete, and the checkpoint is deleted only once the restored agent
// answers. A daemon killed before the checkpoint completed finds the
// sandbox running (its agent, without a socket, is told to bind it again)
// or gone (it is cleaned up and sleeps, memory lost, files kept), unless
// the checkpoint was complete: then it is recorded paused. One killed
// during a restore finds it paused and restores it again on the next call.

// checkpointDir is where a paused sandbox's checkpoint lives. A checkpoint
// is written into checkpointDir+partialSuffix and renamed into place once
// runsc has saved all of it, and renamed to checkpointDir+restoredSuffix
// once restored, before the sandbox is recorded running: so after a crash
// checkpointDir holds a complete checkpoint that was never restored, and
// nothing else (recoverPause).
func checkpointDir(p paths) string { return filepath.Join(p.dir, "memory") }

const (
	partialSuffix  = ".partial"
	restoredSuffix = ".restored"
)

// agentSuspendTimeout bounds how long the agent may take to let go of its
// socket.
const agentSuspendTimeout = 5 * time.Second

// pauseLocked checkpoints b, which must be a running gVisor sandbox, and
// records it paused with reason. b.mu is held.
func (m *Manager) pauseLocked(ctx context.Context, b *box, reason string) error {
	if err := requireStatus(b, "pause", StatusRunning); err != nil {
		return err
	}
	if !b.isGVisor() {
		return m.memoryUnsupported(b)
	}
	if len(m.mountFiles(b.rec.Key).load()) > 0 {
		// runsc restore fails on the FUSE mounts the gofer served
		// (docs/storage.md): idle sleep falls back to sleeping.
		return fmt.Errorf("%w: a gVisor sandbox with bucket mounts cannot be paused with its memory; unmount them first", ErrUnsupported)
	}
	inst := b.running
	if inst == nil || !inst.alive() {
		if err := m.failLocked(ctx, b, "the sandbox's container died; the next call starts it again"); err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return fmt.Errorf("%w: sandbox %s's container had died; it starts again on its next call", ErrUnavailable, b.id)
	}
	rt, err := m.runtimeOf(b)
	if err != nil {
		return err
	}
	p := m.paths(b.rec.Key)
	image := checkpointDir(p)
	if err := removeCheckpoints(p); err != nil {
		return fmt.Errorf("removing an old checkpoint of %s: %w", b.id, err)
	}
	start := m.now()
	steps := newStepTimer()
	if err := m.suspendAgent(ctx, inst, p.socket); err != nil {
		m.resumeAgent(ctx, rt, inst)
		return fmt.Errorf("%w: pausing %s: %w", ErrUnavailable, b.id, err)
	}
	steps.mark("suspend")
	failpoint.Hit("pause-suspended")
	// A caller that goes away must not cut a checkpoint short.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	if err := rt.Checkpoint(cctx, inst.cid, image+partialSuffix, runtime.CheckpointOptions{}); err != nil {
		os.RemoveAll(image + partialSuffix)
		m.log.Error("checkpoint failed", "sandbox", b.id, "err", err)
		if inst.alive() && m.resumeAgent(ctx, rt, inst) == nil {
			return fmt.Errorf("%w: checkpointing %s failed; it runs on", ErrFailed, b.id)
		}
		if ferr := m.failLocked(ctx, b, "a checkpoint failed and took the sandbox down; the next call starts it again"); ferr != nil {
			return errors.Join(err, ferr)
		}
		return fmt.Errorf("%w: checkpointing %s failed and took it down; the next call starts it again", ErrFailed, b.id)
	}
	steps.mark("checkpoint")
	if err := markTranspiler(p.bundle, image+partialSuffix); err != nil {
		m.log.Warn("noting the TypeScript helper beside a checkpoint failed; its restore will fail (files are kept)", "sandbox", b.id, "err", err)
	}
	if err := os.Rename(image+partialSuffix, image); err != nil {
		os.RemoveAll(image + partialSuffix)
		return errors.Join(err, m.failLocked(ctx, b, "the checkpoint could not be kept; the next call starts the sandbox again"))
	}
	failpoint.Hit("pause-after-checkpoint")
	if err := m.changeStatus(ctx, b, StatusPaused, reason); err != nil {
		// The container has stopped: without the record, the checkpoint
		// is of no use.
		os.RemoveAll(image)
		return errors.Join(err, m.failLocked(ctx, b, "the pause could not be recorded; the next call starts the sandbox again"))
	}
	steps.mark("record")
	m.settleLater(b)
	took := m.now().Sub(start)
	m.m.pauses.Inc("")
	m.m.pauseSeconds.Observe(took.Seconds())
	m.emit(b, EventPaused)
	m.log.Info("sandbox paused", "sandbox", b.id, "reason", reason, "took", took, "steps", steps.String(), "bytes", dirSize(image))
	return nil
}

// suspendAgent asks the agent to let go of its socket and waits until it
// has: the socket is gone once the agent closed every connection.
func (m *Manager) suspendAgent(ctx context.Context, inst *instance, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, agentSuspendTimeout)
	defer cancel()
	// A namer that named the sandbox lately may still wait to be closed
	// (namerLinger): its stdio are the daemon's pipes, which no checkpoint
	// may hold.
	if inst.namer != nil {
		inst.namer.Close()
	}
	// A sandbox taken from the pool whose agent no call named yet (a
	// create with no forwarded call since) gets its name now.
	name := inst.name.Load()
	if err := inst.agent.Suspend(ctx, derefOr(name)); err != nil {
		return fmt.Errorf("asking the agent to let go of its socket: %w", err)
	}
	if name != nil {
		inst.name.CompareAndSwap(name, nil)
	}
	inst.link.renew()
	for {
		if _, err := os.Lstat(socket); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the agent kept its socket: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// resumeAgent tells a suspended agent to bind its socket again and waits
// for it to answer.
func (m *Manager) resumeAgent(ctx context.Context, rt Runtime, inst *instance) error {
	ctx = context.WithoutCancel(ctx)
	if err := rt.SignalInit(ctx, inst.cid, agentapi.ResumeSignal); err != nil {
		return err
	}
	return waitAgent(ctx, inst, agentBootTimeout)
}

// createOrRestore creates b's container from its bundle, or, for a paused
// sandbox, restores it from its checkpoint; it returns init's host PID.
// The caller starts a created container (restored ones run).
func (m *Manager) createOrRestore(ctx context.Context, b *box, rt Runtime, cid string, p paths, mode bootMode, opts runtime.CreateOptions) (pid int, restored bool, err error) {
	if mode == bootPrepare {
		pid, err = rt.Create(ctx, cid, p.bundle, opts)
		return pid, false, err
	}
	if m.forkRestores(b) {
		pid, err = m.restoreFork(ctx, b, rt, cid, p, opts)
		return pid, err == nil, err
	}
	if b.state() != StatusPaused {
		pid, err = rt.Create(ctx, cid, p.bundle, opts)
		return pid, false, err
	}
	pid, err = rt.Restore(ctx, cid, p.bundle, checkpointDir(p), opts)
	if err != nil {
		return 0, false, err
	}
	failpoint.Hit("resume-after-restore")
	return pid, true, nil
}

// dropCheckpoint deletes b's checkpoint: it was restored, or it cannot be.
func (m *Manager) dropCheckpoint(b *box) {
	if err := removeCheckpoints(m.paths(b.rec.Key)); err != nil {
		m.log.Warn("removing a checkpoint", "sandbox", b.id, "err", err)
	}
}

// markRestored sets b's restored checkpoint aside, so that a crash before
// it is deleted cannot take it for one still to restore. The restored
// sandbox holds the checkpoint's files open while it reads them.
func (m *Manager) markRestored(b *box) error {
	image := checkpointDir(m.paths(b.rec.Key))
	return os.Rename(image, image+restoredSuffix)
}

func removeCheckpoints(p paths) error {
	image := checkpointDir(p)
	return errors.Join(os.RemoveAll(image), os.RemoveAll(image+partialSuffix), os.RemoveAll(image+restoredSuffix))
}

// recoverPause finds, at start-up, a running sandbox whose container is
// gone but whose checkpoint is complete and was never restored: the daemon
// died after runsc saved it and before the pause was recorded. It is
// recorded paused, memory kept; the next call restores it.
func (m *Manager) recoverPause(ctx context.Context, b *box) bool {
	if !b.isGVisor() {
		return false
	}
	p := m.paths(b.rec.Key)
	if _, err := os.Stat(filepath.Join(checkpointDir(p), "checkpoint.img")); err != nil {
		return false
	}
	if err := m.teardown(ctx, b); err != nil {
		m.log.Warn("cleaning up a sandbox paused before a crash", "sandbox", b.id, "err", err)
	}
	os.RemoveAll(checkpointDir(p) + partialSuffix)
	os.RemoveAll(checkpointDir(p) + restoredSuffix)
	if err := m.changeStatus(ctx, b, StatusPaused, "paused; the daemon restarted before it recorded the pause"); err != nil {
		return false
	}
	m.log.Info("sandbox paused before a daemon restart keeps its memory", "sandbox", b.id)
	return true
}

// dirSize is the bytes of the files in dir, for the log.
func dirSize(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// sleepOrPause puts an idle or evicted b to sleep: a gVisor sandbox is
// paused, keeping its memory and processes, unless that fails, when it
// sleeps as the others do. b.mu is held.
func (m *Manager) sleepOrPause(ctx context.Context, b *box, reason string) error {
	if b.isGVisor() {
		err := m.pauseLocked(ctx, b, reason)
		if err == nil || b.state() != StatusRunning {
			return err
		}
		m.log.Warn("pausing failed; the sandbox sleeps without its memory", "sandbox", b.id, "err", err)
	}
	return m.sleepLocked(ctx, b, StatusSleeping, reason)
}

// derefOr is *p, or "" for nil.
func derefOr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
