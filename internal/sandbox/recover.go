package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
)

// Recover loads the registry and reconciles it with the host after a
// daemon start: a sandbox whose container is still running (the daemon was
// restarted or killed) is reattached as is, processes and all; one whose
// container is gone (the host rebooted, or it died meanwhile) is cleaned up
// and marked stopped, and starts again on its next call. A sandbox that was
// being created when the daemon died is cleaned up the same way and
// completes on its next call. Host state that belongs to no registered
// sandbox (netns, run and state directories) is removed.
func (m *Manager) Recover(ctx context.Context) error {
	rows, err := m.opts.Store.List(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, rec := range rows {
		var cfg Config
		if err := json.Unmarshal(rec.Config, &cfg); err != nil {
			return fmt.Errorf("sandbox %s has an unreadable configuration: %w", rec.ID, err)
		}
		b := &box{id: rec.ID, rec: rec}
		b.setConfig(cfg)
		b.status.Store(Status(rec.Status))
		b.netSlot.Store(int64(rec.NetSlot) + 1)
		b.uidBase.Store(int64(rec.HostUIDBase))
		b.lastUsed.Store(rec.LastUsedAt.UnixNano())
		b.flushedAt.Store(rec.LastUsedAt.UnixNano())
		known[rec.Key] = true
		m.mu.Lock()
		m.addBoxLocked(b)
		m.mu.Unlock()

		switch Status(rec.Status) {
		case StatusRunning:
			if m.reattach(ctx, b) {
				m.log.Info("sandbox reattached", "sandbox", b.id)
				continue
			}
			if m.checkLost(ctx, b) != nil || m.recoverPause(ctx, b) {
				continue
			}
			m.cleanAfterCrash(ctx, b, "the container was gone when the daemon started (host reboot or crash)")
		case StatusCreating:
			// Nothing of it can be lost yet; its directory is made with
			// its row, but the crash may have come between the two.
			if err := os.MkdirAll(m.paths(rec.Key).dir, 0o700); err != nil {
				m.log.Warn("making a sandbox's directory", "sandbox", b.id, "err", err)
			}
			m.cleanAfterCrash(ctx, b, "creation was interrupted by a daemon restart")
		case StatusLost:
			// Stays lost until destroyed.
		case StatusDestroying:
			b.mu.Lock()
			if err := m.destroyLocked(ctx, b); err != nil {
				m.log.Error("finishing an interrupted destroy", "sandbox", b.id, "err", err)
			}
			b.mu.Unlock()
			delete(known, rec.Key)
		case StatusPaused:
			// Its container may have been created ahead of its resume, or
			// been halfway there (resume.go): the resume sets it up afresh.
			if err := m.teardown(ctx, b); err != nil {
				m.log.Warn("cleaning up a paused sandbox's remnants", "sandbox", b.id, "err", err)
			}
			_ = m.checkLost(ctx, b)
		default:
			// sleeping, stopped, failed: nothing should run; make sure,
			// keeping the status and its reason.
			for _, rt := range m.runtimesOf(b) {
				if st, err := rt.State(ctx, containerID(rec.Key)); err == nil && st.Status != "stopped" {
					if err := m.teardown(ctx, b); err != nil {
						m.log.Warn("cleaning up sandbox remnants", "sandbox", b.id, "err", err)
					}
				}
			}
			_ = m.checkLost(ctx, b) // logged; a lost sandbox stays lost
		}
	}
	m.collectOrphans(ctx, known)
	return nil
}

func (m *Manager) cleanAfterCrash(ctx context.Context, b *box, reason string) {
	if err := m.teardown(ctx, b); err != nil {
		m.log.Warn("cleaning up sandbox remnants", "sandbox", b.id, "err", err)
	}
	// A checkpoint of a pause the daemon did not live to record.
	m.dropCheckpoint(b)
	// Sleeping: the next call starts it again, as a wake.
	if err := m.changeStatus(ctx, b, StatusSleeping, reason); err != nil {
		return // it stays running (or creating) with no container: the next start fails it and starts it again
	}
	m.log.Info("sandbox will start on its next call", "sandbox", b.id, "reason", reason)
}

// reattach adopts a container that survived a daemon restart.
func (m *Manager) reattach(ctx context.Context, b *box) bool {
	key := b.rec.Key
	rt, err := m.runtimeOf(b)
	if err != nil {
		m.log.Warn("cannot reattach sandbox", "sandbox", b.id, "err", err)
		return false
	}
	st, err := rt.State(ctx, containerID(key))
	if err == nil && st.Status == "paused" {
		// The daemon died while a snapshot had the container frozen.
		if rerr := rt.Resume(ctx, containerID(key)); rerr != nil {
			m.log.Warn("thawing a sandbox frozen by an interrupted snapshot", "sandbox", b.id, "err", rerr)
		} else {
			m.log.Info("sandbox thawed after an interrupted snapshot", "sandbox", b.id)
			st.Status = "running"
		}
	}
	if err != nil || st.Status != "running" || st.PID <= 0 {
		return false
	}
	ep, err := m.opts.Network.Attach(ctx, key, m.networkRequest(b))
	if err != nil {
		m.log.Warn("reattaching sandbox network", "sandbox", b.id, "err", err)
		return false
	}
	inst, err := newInstance(containerID(key), st.PID, ep, m.agents, m.paths(key).socket)
	if err != nil {
		return false
	}
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	h, err := inst.agent.Health(hctx)
	if err != nil && b.isGVisor() {
		// The daemon may have died while a pause had the agent let go of
		// its socket (checkpoint.go): the agent binds it again when told.
		if rt.SignalInit(ctx, containerID(key), agentapi.ResumeSignal) == nil {
			err = waitAgent(ctx, inst, 5*time.Second)
			if err == nil {
				m.log.Info("sandbox's agent took its socket back after an interrupted pause", "sandbox", b.id)
				h, err = inst.agent.Health(ctx)
			}
		}
	}
	if err != nil {
		inst.close()
		return false
	}
	if h.ProtocolVersion != api.ProtocolVersion {
		// An agent from before a daemon upgrade: it would not know this
		// daemon's routes. The sandbox restarts (with the new agent) on its
		// next call.
		m.log.Info("sandbox runs an agent of another protocol version; it restarts on its next call",
			"sandbox", b.id, "agent", h.ProtocolVersion, "daemon", api.ProtocolVersion)
		inst.close()
		return false
	}
	if err := m.reserve(ctx, b); err != nil {
		m.log.Warn("reattaching over capacity", "sandbox", b.id, "err", err)
		m.forceReserve(b)
	} else {
		m.bootEnded() // it was running already
	}
	b.running = inst
	go m.watch(b, inst)
	if b.isGVisor() {
		// Left by a crash during a pause that failed or a resume that
		// completed.
		m.dropCheckpoint(b)
	}
	return true
}

// collectOrphans removes host state of sandboxes the registry does not
// know: left by a crash between creating the state and recording it, or
// between deleting the record and the state.
func (m *Manager) collectOrphans(ctx context.Context, known map[string]bool) {
	orphans := map[string]bool{}
	if keys, err := m.opts.Network.Keys(); err == nil {
		for _, k := range keys {
			if !known[k] {
				orphans[k] = true
			}
		}
	}
	for _, dir := range []string{filepath.Join(m.opts.StateDir, "sandboxes"), filepath.Join(m.opts.RunDir, "sandboxes")} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !known[e.Name()] {
				orphans[e.Name()] = true
			}
		}
	}
	for key := range orphans {
		m.log.Info("removing state of an unregistered sandbox", "key", key)
		b := &box{rec: recKey(key)}
		if err := m.teardown(ctx, b); err != nil {
			m.log.Warn("removing orphan", "key", key, "err", err)
			continue
		}
		if err := m.removeFiles(key); err != nil {
			m.log.Warn("removing orphan files", "key", key, "err", err)
		}
	}
}
