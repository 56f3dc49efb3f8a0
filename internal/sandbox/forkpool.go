package sandbox

import (
	"context"
	"reflect"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/metrics"
)

// Warm forks. A fork of a filesystem snapshot boots on the snapshot's
// layer, so the warm pool's sandboxes (on their image alone) cannot serve
// it, and an overlay's layers cannot be changed under a running
// container. Instead, once a snapshot is used for a fork, the daemon keeps
// one sandbox started ahead with that fork's configuration (the snapshot's
// layer included): the next fork of the snapshot with the same settings
// takes it and names it exactly as a create takes a warm sandbox (adopt),
// and another is started for the one after. A snapshot whose forks stop
// coming loses its warm fork after forkPoolIdle; removing the snapshot
// discards it first. A daemon with --warm-pool 0 keeps none.
//
// Forks of memory snapshots (gVisor) are restored, not booted, and take a
// new identity inside the restored sandbox (memfork.go): they are not
// pooled.

// forkPoolIdle is how long a snapshot keeps its warm fork after its last
// fork.
const forkPoolIdle = 10 * time.Minute

// forkPools are the warm forks, by snapshot.
type forkPools struct {
	mu     sync.Mutex
	bySnap map[string]*forkPool
	closed bool // the daemon stops: no more warm forks
}

// forkPool is one snapshot's: the configuration of its last fork and the
// sandbox started ahead with it.
type forkPool struct {
	cfg      Config
	lastUsed time.Time
	ready    *box
	// booting is closed when the start in progress (of bootBox) ends;
	// nil when none.
	booting chan struct{}
	bootBox *box
	dropped bool
}

// noteFork records that a fork with cfg (resolved, as createLocked has
// it) was made, so that the next one finds a sandbox started ahead.
func (m *Manager) noteFork(cfg Config) {
	if cfg.Snapshot == "" || cfg.SnapshotMemory || m.opts.WarmPool <= 0 {
		return
	}
	m.forks.mu.Lock()
	if m.forks.bySnap == nil {
		m.forks.bySnap = map[string]*forkPool{}
	}
	p := m.forks.bySnap[cfg.Snapshot]
	if p == nil || !reflect.DeepEqual(p.cfg, poolable(cfg)) {
		if p != nil && p.ready != nil {
			go m.discardWarm(p.ready) // of settings no longer asked for
		}
		p = &forkPool{cfg: poolable(cfg), booting: p.bootingOrNil()}
		m.forks.bySnap[cfg.Snapshot] = p
	}
	p.lastUsed = m.now()
	m.forks.mu.Unlock()
	time.AfterFunc(refillDelay, func() { m.fillForkPools(context.Background()) })
}

func (p *forkPool) bootingOrNil() chan struct{} {
	if p == nil {
		return nil
	}
	return p.booting
}

// takeForkWarm hands out the warm fork of cfg's snapshot if it was made
// with exactly cfg.
func (m *Manager) takeForkWarm(cfg Config) *box {
	m.forks.mu.Lock()
	defer m.forks.mu.Unlock()
	p := m.forks.bySnap[cfg.Snapshot]
	if p == nil || p.ready == nil {
		return nil
	}
	w := p.ready
	if w.running == nil || !w.running.alive() {
		p.ready = nil
		go m.discardWarm(w)
		return nil
	}
	if !reflect.DeepEqual(w.cfg, poolable(cfg)) {
		return nil
	}
	p.ready = nil
	p.lastUsed = m.now()
	return w
}

// fillForkPools starts a warm fork for every snapshot that lacks one, one
// at a time, and drops the pools of snapshots unused for forkPoolIdle.
func (m *Manager) fillForkPools(ctx context.Context) {
	for {
		p, w, done := m.nextForkPool()
		if p == nil {
			return
		}
		err := m.startWarmWith(ctx, w, p.cfg)
		m.forks.mu.Lock()
		p.booting, p.bootBox = nil, nil
		keep := err == nil && !p.dropped && m.forks.bySnap[p.cfg.Snapshot] == p && p.ready == nil
		if keep {
			p.ready = w
		}
		m.forks.mu.Unlock()
		close(done)
		if err != nil {
			m.log.Warn("could not start a warm fork", "snapshot", p.cfg.Snapshot, "err", err)
			return
		}
		if !keep {
			m.discardWarm(w)
		}
	}
}

// nextForkPool picks a pool to start a warm fork for, marking it booting,
// after dropping idle ones, and the box to start; nil when none needs one.
func (m *Manager) nextForkPool() (*forkPool, *box, chan struct{}) {
	m.forks.mu.Lock()
	defer m.forks.mu.Unlock()
	if m.forks.closed {
		return nil, nil, nil
	}
	now := m.now()
	for name, p := range m.forks.bySnap {
		if p.booting != nil {
			continue
		}
		if now.Sub(p.lastUsed) > forkPoolIdle {
			if p.ready != nil {
				go m.discardWarm(p.ready)
			}
			delete(m.forks.bySnap, name)
			continue
		}
		if p.ready == nil && !p.dropped {
			p.booting, p.bootBox = make(chan struct{}), &box{}
			return p, p.bootBox, p.booting
		}
	}
	return nil, nil, nil
}

// dropForkPool discards the warm fork of the snapshot name, waiting for
// one being started: the snapshot's layer is about to go.
func (m *Manager) dropForkPool(name string) {
	m.forks.mu.Lock()
	p := m.forks.bySnap[name]
	if p == nil {
		m.forks.mu.Unlock()
		return
	}
	delete(m.forks.bySnap, name)
	p.dropped = true
	w, booting := p.ready, p.booting
	p.ready = nil
	m.forks.mu.Unlock()
	if w != nil {
		m.discardWarm(w)
	}
	if booting != nil {
		<-booting // the start discards what it made
	}
}

// closeForkPools discards every warm fork (the daemon stops).
func (m *Manager) closeForkPools() {
	m.forks.mu.Lock()
	m.forks.closed = true
	names := make([]string, 0, len(m.forks.bySnap))
	for name := range m.forks.bySnap {
		names = append(names, name)
	}
	m.forks.mu.Unlock()
	for _, name := range names {
		m.dropForkPool(name)
	}
}

// registerForkPoolMetrics adds sandboxd_fork_pool: warm forks by state.
func (m *Manager) registerForkPoolMetrics(r *metrics.Registry) {
	r.NewGaugeFunc("sandboxd_fork_pool", "Warm forks kept for snapshots recently forked, by state.", "state", func() map[string]float64 {
		m.forks.mu.Lock()
		defer m.forks.mu.Unlock()
		var ready, starting float64
		for _, p := range m.forks.bySnap {
			if p.ready != nil {
				ready++
			}
			if p.booting != nil {
				starting++
			}
		}
		return map[string]float64{"ready": ready, "starting": starting}
	})
}

// forkHeld lists the network slots and UID ranges warm forks (ready or
// starting) hold.
func (m *Manager) forkHeld() (slots []int, uids []uint32) {
	m.forks.mu.Lock()
	defer m.forks.mu.Unlock()
	for _, p := range m.forks.bySnap {
		for _, w := range []*box{p.ready, p.bootBox} {
			if w == nil {
				continue
			}
			if n := w.netSlot.Load(); n > 0 {
				slots = append(slots, int(n-1))
			}
			if n := w.uidBase.Load(); n > 0 {
				uids = append(uids, uint32(n))
			}
		}
	}
	return slots, uids
}
