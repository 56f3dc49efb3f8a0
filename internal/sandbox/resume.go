package sandbox

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/failpoint"
	"github.com/sandboxd/sandboxd/internal/runtime"
)

// A paused gVisor sandbox's container is created ahead of its resume.
//
// Most of a `runsc restore` from nothing is the boot of a new gVisor
// sandbox (its process, the gofer, the network taken from the namespace)
// before any of the checkpoint is read; runsc can instead restore into a
// container `runsc create` made earlier. So once a pause has checkpointed
// and torn the sandbox down, it sets the sandbox up again as a boot would
// (network, overlay, bundle) and creates its container without starting
// it (b.prepared); the resume is then the restore itself and the agent's
// socket. The created container holds no user code and none of the
// checkpoint's memory: only the gVisor sandbox's own processes, waiting.
//
// The tear-down, the checkpoint's flush to disk and the creation run in
// the background once the pause is recorded (settleLater): the caller
// waits only for the checkpoint. A resume that comes first tears down and
// restores from nothing.
//
// Nothing of it is recorded: a daemon that restarts tears down whatever a
// paused sandbox had set up (Recover), and its resume restores from
// nothing as before. A restore into the created container that fails is
// tried once more from nothing, so the container created ahead can only
// cost time, never the sandbox's memory.

// settleLater finishes b's pause off the caller's path: the checkpoint
// is complete and recorded, so the caller is answered while the stopped
// container is torn down and the next one created (settle), under b.mu
// as every lifecycle change. Whoever takes b.mu first does the tear-down:
// the settle, or a resume, stop or destroy that came before it (teardown
// clears unsettled). b.mu is held.
func (m *Manager) settleLater(b *box) {
	// At once, so that the watcher does not take the checkpoint's exit for
	// a crash.
	if b.running != nil {
		b.running.close()
		b.running = nil
		m.release(b)
	}
	b.unsettled = true
	m.settles.Add(1)
	image := checkpointDir(m.paths(b.rec.Key))
	go func() {
		defer m.settles.Done()
		// Before the resume reads it with O_DIRECT (RestoreInto), and
		// outside b.mu: it waits for the disk, which no call should. A
		// resume or destroy meanwhile is safe (O_DIRECT reads see dirty
		// pages; a removed file syncs or is gone).
		flushed := time.Now()
		if err := runtime.FlushCheckpoint(image); err != nil {
			m.log.Warn("flushing a paused sandbox's checkpoint", "sandbox", b.id, "err", err)
		}
		flush := time.Since(flushed)
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.unsettled || b.destroyed || b.state() != StatusPaused {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
		defer cancel()
		steps := newStepTimer()
		if err := m.teardown(ctx, b); err != nil {
			m.log.Error("tearing down a paused sandbox", "sandbox", b.id, "err", err)
		}
		steps.mark("teardown")
		m.prepareResume(ctx, b)
		steps.mark("prepare")
		m.log.Debug("paused sandbox settled", "sandbox", b.id, "prepared", b.prepared != nil, "flush", flush, "steps", steps.String())
	}()
}

// settleTimeout bounds a pause's tear-down and the creation of the next
// container.
const settleTimeout = 5 * time.Minute

// maxPrepared bounds the containers created ahead of resumes. Each holds
// about 11 MiB and a network slot while its sandbox is paused; a host with
// hundreds of idle gVisor sandboxes paused would otherwise hold that for
// every one, against the pause's point of freeing memory. Pauses beyond
// the bound resume from nothing, as before.
const maxPrepared = 16

// prepareResume creates paused b's container ahead of its resume, unless
// maxPrepared others hold one; a failure only logs, and the resume
// restores from nothing. b.mu is held.
func (m *Manager) prepareResume(ctx context.Context, b *box) {
	if m.prepared.Add(1) > maxPrepared {
		m.prepared.Add(-1)
		m.log.Debug("no container created ahead of this resume: enough paused sandboxes hold one", "sandbox", b.id, "max", maxPrepared)
		return
	}
	if err := m.enterBoot(ctx); err != nil {
		m.prepared.Add(-1)
		return
	}
	defer m.leaveBoot()
	inst, err := m.bootAs(ctx, b, bootPrepare)
	if err != nil {
		m.prepared.Add(-1)
		m.log.Warn("creating a paused sandbox's container ahead of its resume", "sandbox", b.id, "err", err)
		return
	}
	b.prepared = inst
}

// dropPrepared closes b's container created ahead, if any. b.mu is held.
func (m *Manager) dropPrepared(b *box) {
	if b.prepared != nil {
		b.prepared.close()
		b.prepared = nil
		m.prepared.Add(-1)
	}
}

// resumePrepared restores paused b into its container created ahead and
// waits for its agent. On failure the caller tears down what is left.
// b.mu is held.
func (m *Manager) resumePrepared(ctx context.Context, b *box) (_ *instance, err error) {
	inst := b.prepared
	steps := newStepTimer()
	defer func() {
		m.log.Debug("sandbox boot", "sandbox", b.id, "prepared", true, "steps", steps.String(), "err", err)
	}()
	if !inst.alive() {
		return nil, fmt.Errorf("the container created ahead exited")
	}
	rt, err := m.runtimeOf(b)
	if err != nil {
		return nil, err
	}
	p := m.paths(b.rec.Key)
	logf, err := openLog(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// Every CPU for the restore, the sandbox's limit again once the agent
	// answers or the resume fails (resumecpu.go).
	defer m.widenCPU(b)()
	if err := rt.RestoreInto(ctx, inst.cid, checkpointDir(p), runtime.CreateOptions{Log: logf}); err != nil {
		return nil, err
	}
	steps.mark("restore")
	failpoint.Hit("resume-after-restore")
	if err := wakeRestored(ctx, rt, inst, nil); err != nil {
		return nil, fmt.Errorf("%w (agent log: %s)", err, logTail(p.log))
	}
	steps.mark("agent")
	b.prepared = nil // it is the running instance now
	m.prepared.Add(-1)
	return inst, nil
}

// initSignaler is the part of Runtime that wakeRestored uses.
type initSignaler interface {
	SignalInit(ctx context.Context, id string, sig syscall.Signal) error
}

// selfWakeGrace is how long a restored agent has to bind its socket again
// by itself before the daemon sends it agentapi.ResumeSignal.
const selfWakeGrace = time.Second

// wakeRestored waits for restored inst's agent to answer. The agent let
// go of its socket before the checkpoint and binds it again by itself as
// soon as gVisor reports the restore (internal/agent, suspend.go), so the
// resume's path holds no `runsc kill`. An agent that has not answered
// within selfWakeGrace (a checkpoint of an agent from before it did so)
// is sent agentapi.ResumeSignal through the runtime, as it expects, and
// given agentBootTimeout more. w, when not nil, watches the socket's
// directory (see waitAgentWatched).
func wakeRestored(ctx context.Context, rt initSignaler, inst *instance, w *socketWatch) error {
	err := waitAgentWatched(ctx, inst, w, selfWakeGrace)
	if err == nil || !inst.alive() || ctx.Err() != nil {
		return err
	}
	if err := rt.SignalInit(ctx, inst.cid, agentapi.ResumeSignal); err != nil {
		return fmt.Errorf("waking the restored agent: %w", err)
	}
	return waitAgent(ctx, inst, agentBootTimeout)
}
