package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// lockExisting returns the locked box of an existing sandbox, or
// ErrNotFound.
func (m *Manager) lockExisting(id string) (*box, error) {
	b := m.lock(id)
	if b == nil {
		return nil, ErrNotFound
	}
	if b.rec.ID == "" {
		b.mu.Unlock()
		return nil, ErrNotFound
	}
	return b, nil
}

// Stop stops the sandbox's container on request; it keeps its disk and
// starts again on its next call, exactly as a wake. A sandbox that runs
// nothing already (stopped, or failed: it keeps its reason) is left as it
// is; one that is being created or destroyed is refused with ErrConflict.
func (m *Manager) Stop(ctx context.Context, id string) (Info, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	switch b.state() {
	case StatusRunning:
		err = m.sleepLocked(ctx, b, StatusStopped, "stopped by request")
	case StatusSleeping, StatusPaused:
		err = m.stopNotRunning(ctx, b)
	case StatusStopped, StatusFailed:
	default:
		err = requireStatus(b, "stop", StatusRunning, StatusSleeping, StatusPaused, StatusStopped, StatusFailed)
	}
	return b.info(), err
}

// stopNotRunning records a sleeping or paused b as stopped; a paused
// sandbox's checkpoint is dropped (a stopped sandbox starts afresh).
// b.mu is held.
func (m *Manager) stopNotRunning(ctx context.Context, b *box) error {
	paused := b.state() == StatusPaused
	reason := "stopped by request"
	if paused {
		reason = "stopped by request; its memory was dropped"
	}
	if err := m.changeStatus(ctx, b, StatusStopped, reason); err != nil {
		return err
	}
	if paused {
		if b.prepared != nil || b.unsettled {
			if err := m.teardown(ctx, b); err != nil {
				m.log.Warn("removing a stopped sandbox's container created ahead", "sandbox", b.id, "err", err)
			}
		}
		m.dropCheckpoint(b)
	}
	m.emit(b, EventStopped)
	return nil
}

// Start starts an existing sandbox that is not running.
func (m *Manager) Start(ctx context.Context, id string) (Info, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	err = m.startLocked(ctx, b)
	return b.info(), err
}

// Restart stops the sandbox's container (if it runs) and starts it again.
func (m *Manager) Restart(ctx context.Context, id string) (Info, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	switch b.state() {
	case StatusRunning:
		if err := m.sleepLocked(ctx, b, StatusStopped, "restarting"); err != nil {
			return b.info(), err
		}
	case StatusPaused:
		if err := m.stopNotRunning(ctx, b); err != nil {
			return b.info(), err
		}
	}
	err = m.startLocked(ctx, b)
	return b.info(), err
}

// Renew resets the sandbox's idle timer, as a call would.
func (m *Manager) Renew(ctx context.Context, id string) (Info, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	b.touch(m.now())
	return b.info(), nil
}

// Update are the settings that may change after creation; nil fields stay.
type Update struct {
	SleepAfter *time.Duration
	KeepAlive  *bool
}

// Update changes a sandbox's sleepAfter and keepAlive.
func (m *Manager) Update(ctx context.Context, id string, u Update) (Info, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	cfg := b.cfg
	if u.SleepAfter != nil {
		if cfg.SleepAfter, err = m.opts.Policy.resolveSleepAfter(*u.SleepAfter); err != nil {
			return Info{}, err
		}
	}
	if u.KeepAlive != nil {
		cfg.KeepAlive = *u.KeepAlive
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return Info{}, err
	}
	if err := m.opts.Store.SetConfig(ctx, id, data); err != nil {
		return Info{}, fmt.Errorf("recording settings of %s: %w", id, err)
	}
	b.setConfig(cfg)
	b.touch(m.now())
	return b.info(), nil
}

// SetNetworkPolicy replaces the egress policy of a sandbox (allowCidrs,
// denyCidrs, the domain lists, the default) with n's; n.Mode, when given,
// must be the sandbox's, and allowHostCidrs stay as created. The policy is
// stored first, then applied to the running sandbox's network at once (a
// sleeping or stopped one gets it when it starts). Errors are
// *PolicyError for an invalid policy.
func (m *Manager) SetNetworkPolicy(ctx context.Context, id string, n NetworkConfig) (Info, error) {
	b, err := m.lockExisting(id)
	if err != nil {
		return Info{}, err
	}
	defer b.mu.Unlock()
	cfg := b.cfg
	if n.Mode != "" && n.Mode != cfg.Network.Mode {
		return Info{}, policyErr("mode", n.Mode, "the sandbox's network mode is %q and cannot change", cfg.Network.Mode)
	}
	n.Mode, n.AllowHostCIDRs = cfg.Network.Mode, cfg.Network.AllowHostCIDRs
	if cfg.Network, err = m.opts.Policy.resolveNetwork(n); err != nil {
		return Info{}, err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return Info{}, err
	}
	if err := m.opts.Store.SetConfig(ctx, id, data); err != nil {
		return Info{}, fmt.Errorf("recording the network policy of %s: %w", id, err)
	}
	b.setConfig(cfg)
	if b.running != nil && cfg.Network.Mode == NetworkInternet {
		if err := m.opts.Network.SetPolicy(ctx, b.rec.Key, m.networkRequest(b)); err != nil {
			return b.info(), fmt.Errorf("applying the network policy of %s: %w", id, err)
		}
	}
	return b.info(), nil
}

// Reset is called when a lease's agent gave no answer at all: the agent is
// dead or dying although its process has not been seen to exit yet (a
// dying init first waits for every process of its PID namespace). Reset
// waits briefly for the exit, else kills the container, and marks the
// sandbox failed so that the next Acquire starts it again. It reports
// whether the agent had died on its own. A sandbox restarted meanwhile by
// another call is left alone (and reported as died: the lease's agent is
// gone).
func (m *Manager) Reset(ctx context.Context, id string, lease *Lease) (died bool) {
	b := m.lock(id)
	if b == nil {
		return true
	}
	defer b.mu.Unlock()
	inst := b.running
	if inst == nil || inst.link != lease.Transport {
		return true
	}
	deadline := time.Now().Add(2 * time.Second)
	for inst.alive() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	died = !inst.alive()
	m.log.Warn("sandbox agent unreachable; restarting the sandbox", "sandbox", b.id)
	m.failLocked(ctx, b, "the sandbox's agent stopped answering; the next call starts the sandbox again")
	return died
}
