package sandbox

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// reserve counts b as running before its container starts, within the
// daemon's capacity. When the host is full, the least recently used idle
// sandbox is put to sleep to make room; when no sandbox can be, the
// answer is ErrCapacity. b.mu is held. A nil error counts b as booting
// until bootEnded.
func (m *Manager) reserve(ctx context.Context, b *box) error {
	for attempt := 0; ; attempt++ {
		m.mu.Lock()
		booting := m.booting
		m.mu.Unlock()
		why, _ := m.memoryShort(booting + 1)
		m.mu.Lock()
		if err := m.checkRunningLocked(b); err != nil {
			// A tenant's quota never makes room by putting others to
			// sleep: it is the tenant's own bound.
			m.mu.Unlock()
			return err
		}
		if why == "" {
			why = m.fullLocked(b.memory)
		}
		if why == "" {
			m.running++
			m.runningMemory += b.memory
			m.booting++
			b.up.Store(true)
			m.mu.Unlock()
			return nil
		}
		victims := m.evictionCandidates(b)
		m.mu.Unlock()
		if m.dropWarm() {
			// A pool sandbox made room before any named one sleeps. Not an
			// attempt: the pool is finite and refills only into free room.
			attempt--
			continue
		}
		if attempt >= memoryRelief || !m.evictOne(ctx, victims, "put to sleep to make room for another sandbox") {
			return fmt.Errorf("%w: %s, and no sandbox is idle enough to sleep; retry later", ErrCapacity, why)
		}
	}
}

// tryReserve counts b as running (and booting) if it fits without making
// room.
func (m *Manager) tryReserve(b *box) bool {
	m.mu.Lock()
	booting := m.booting
	m.mu.Unlock()
	if why, _ := m.memoryShort(booting + 1); why != "" {
		return false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fullLocked(b.memory) != "" {
		return false
	}
	m.running++
	m.runningMemory += b.memory
	m.booting++
	b.up.Store(true)
	return true
}

// bootEnded ends the booting count that a successful reserve or
// tryReserve began.
func (m *Manager) bootEnded() {
	m.mu.Lock()
	m.booting--
	m.mu.Unlock()
}

// forceReserve counts b as running whatever the capacity (a container that
// survived a daemon restart is running, like it or not).
func (m *Manager) forceReserve(b *box) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !b.up.Swap(true) {
		m.running++
		m.runningMemory += b.memory
	}
}

// release stops counting b as running.
func (m *Manager) release(b *box) {
	if !b.up.Swap(false) {
		return
	}
	m.mu.Lock()
	m.running--
	m.runningMemory -= b.memory
	m.mu.Unlock()
}

// fullLocked says why one more sandbox with the given memory limit may not
// run by count or by the budget of limits, or "" if it may. m.mu is held.
func (m *Manager) fullLocked(memory int64) string {
	c := m.opts.Capacity
	if c.MaxRunning > 0 && m.running+1 > c.MaxRunning {
		return fmt.Sprintf("%d sandboxes run, the most this host runs at once", m.running)
	}
	if c.MemoryBudget != 0 && m.runningMemory+memory > c.MemoryBudget {
		return fmt.Sprintf("%d sandboxes run, using %d of %d bytes of the memory budget", m.running, m.runningMemory, c.MemoryBudget)
	}
	return ""
}

// evictionCandidates lists running sandboxes other than self that nothing
// is using and that may sleep, least recently used first. m.mu is held.
func (m *Manager) evictionCandidates(self *box) []*box {
	var out []*box
	for _, b := range m.boxes {
		if b != self && b.up.Load() && b.leases.Load() == 0 && !b.keepAlive.Load() {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].lastUsed.Load() < out[j].lastUsed.Load() })
	return out
}

// evictOne puts the first of victims that is really idle to sleep, for
// reason. It never waits for a sandbox's lock (the caller holds another
// one).
func (m *Manager) evictOne(ctx context.Context, victims []*box, reason string) bool {
	for _, v := range victims {
		if !v.mu.TryLock() {
			continue
		}
		ok := v.running != nil && !v.destroyed && v.leases.Load() == 0 && !m.agentBusy(ctx, v.running)
		if ok {
			m.log.Info("putting the least recently used idle sandbox to sleep", "sandbox", v.id, "reason", reason)
			m.sleepOrPause(ctx, v, reason)
		}
		v.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// checkTotal refuses a new sandbox when MaxTotal exist (the one being
// created has its placeholder in boxes already).
func (m *Manager) checkTotal() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if max := m.opts.Capacity.MaxTotal; max > 0 && len(m.boxes) > max {
		return fmt.Errorf("%w: the host already has %d sandboxes, its maximum; destroy some first", ErrCapacity, max)
	}
	return nil
}

// RetryAfter is what a caller refused for capacity should wait.
const RetryAfter = 5 * time.Second
