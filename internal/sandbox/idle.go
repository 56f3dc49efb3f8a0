package sandbox

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Run puts idle sandboxes to sleep until ctx ends. A sandbox is idle when
// it is not kept alive, no call, stream, terminal or connection holds a
// lease on it, nothing used it for its sleepAfter, and its agent reports
// nothing running on its own (background processes, code executions).
// It also keeps the warm pool filled.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.IdleCheck)
	defer t.Stop()
	m.fillPool(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.sleepIdle(ctx)
			m.relieveMemory(ctx)
			m.fillPool(ctx)
		}
	}
}

func (m *Manager) sleepIdle(ctx context.Context) {
	now := m.now()
	for _, b := range m.snapshot() {
		if !b.up.Load() || b.keepAlive.Load() || b.leases.Load() > 0 {
			continue
		}
		last := b.lastUsed.Load()
		if now.Sub(time.Unix(0, last)) < time.Duration(b.sleepAfter.Load()) {
			continue
		}
		m.sleepIfIdle(ctx, b, last)
	}
}

func (m *Manager) snapshot() []*box {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*box, 0, len(m.boxes))
	for _, b := range m.boxes {
		out = append(out, b)
	}
	return out
}

// sleepIfIdle asks b's agent whether anything runs, without holding b's
// lock during the question, and puts b to sleep if nothing does and
// nothing used b meanwhile.
func (m *Manager) sleepIfIdle(ctx context.Context, b *box, last int64) {
	if !b.mu.TryLock() {
		return // busy with a lifecycle change
	}
	inst := b.running
	keepsMemory := m.pausesWithMemory(b)
	b.mu.Unlock()
	if inst == nil {
		return
	}
	// A sandbox paused with its memory keeps its processes: they stand
	// still while it is paused and go on when it resumes, so they do not
	// keep it awake (docs/snapshots.md). Elsewhere sleep would kill them.
	if !keepsMemory && m.agentBusy(ctx, inst) {
		b.touch(m.now())
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running != inst || b.destroyed || b.leases.Load() > 0 || b.lastUsed.Load() != last || b.cfg.KeepAlive {
		return
	}
	reason := fmt.Sprintf("idle for %s", b.cfg.SleepAfter)
	if !keepsMemory {
		m.sleepOrPause(ctx, b, reason)
		return
	}
	err := m.pauseLocked(ctx, b, reason)
	if err == nil || b.state() != StatusRunning {
		return
	}
	// Sleeping instead would kill what runs.
	if m.agentBusy(ctx, inst) {
		m.log.Warn("pausing an idle sandbox failed; it stays up while its processes run", "sandbox", b.id, "err", err)
		b.touch(m.now())
		return
	}
	m.log.Warn("pausing failed; the sandbox sleeps without its memory", "sandbox", b.id, "err", err)
	m.sleepLocked(ctx, b, StatusSleeping, reason)
}

// pausesWithMemory: b's idle sleep is a pause that keeps its memory and
// processes (gVisor without bucket mounts, checkpoint.go). b.mu is held.
func (m *Manager) pausesWithMemory(b *box) bool {
	return b.isGVisor() && len(m.mountFiles(b.rec.Key).load()) == 0
}

// agentBusy asks the agent whether anything it runs keeps the sandbox
// awake. An agent that cannot say is taken as idle.
func (m *Manager) agentBusy(ctx context.Context, inst *instance) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	a, err := inst.agent.Activity(ctx)
	return err == nil && a.Busy
}

// agentShutdown asks the agent to stop, saying why.
func agentShutdown(ctx context.Context, inst *instance, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return inst.agent.Shutdown(ctx, reason)
}

// stopGrace is how long the agent gets to save its state and exit on
// SIGTERM before everything in the sandbox is killed.
const stopGrace = 3 * time.Second

// sleepLocked stops b's container, keeping everything else, and records
// status (sleeping or stopped) with reason once the container is gone. If
// the registry cannot be written, b stays running without a container,
// which its next start records as a failure. b.mu is held.
func (m *Manager) sleepLocked(ctx context.Context, b *box, status Status, reason string) error {
	if err := requireStatus(b, "stop", StatusRunning); err != nil {
		return err
	}
	if inst := b.running; inst != nil {
		// Let the agent save what must survive (session definitions, env)
		// and record why its processes die; SIGTERM if it cannot be asked.
		inst.closing.Store(true)
		why := "slept"
		if status == StatusStopped {
			why = "stopped"
		}
		if agentShutdown(ctx, inst, why) != nil {
			if rt, err := m.runtimeOf(b); err == nil {
				rt.Kill(ctx, inst.cid, syscall.SIGTERM)
			}
		}
		deadline := time.Now().Add(stopGrace)
		for inst.alive() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	err := m.teardown(ctx, b)
	if err != nil {
		m.log.Error("stopping sandbox", "sandbox", b.id, "err", err)
	}
	if serr := m.changeStatus(ctx, b, status, reason); serr != nil {
		return errors.Join(err, serr)
	}
	if status == StatusSleeping {
		m.m.sleeps.Inc("")
		m.emit(b, EventSlept)
	} else {
		m.emit(b, EventStopped)
	}
	m.log.Info("sandbox "+string(status), "sandbox", b.id, "reason", reason)
	return err
}
