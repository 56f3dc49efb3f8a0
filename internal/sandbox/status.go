package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// Status is where a sandbox is in its lifecycle. It is the one truth about
// a sandbox's state: the registry's row, the API's SandboxStatus, the
// OpenAPI enum and the SDKs' lists are checked against lifecycle by tests.
//
// sleeping and stopped keep the disk, the registry row and everything the
// agent persists; only the container (memory, processes) is gone. paused
// (gVisor only) keeps memory and processes too, in a checkpoint on disk.
// Any call to a sleeping, paused, stopped or failed sandbox starts it
// again.
type Status string

// Statuses of a sandbox, as stored.
const (
	StatusCreating   Status = "creating"
	StatusRunning    Status = "running"
	StatusSleeping   Status = "sleeping"
	StatusPaused     Status = "paused"
	StatusStopped    Status = "stopped"
	StatusFailed     Status = "failed"
	StatusDestroying Status = "destroying"
	// StatusLost: the sandbox's files vanished behind the daemon's back
	// (lost.go); it can only be destroyed.
	StatusLost Status = "lost"
)

// lifecycle is the state machine: each status and the statuses it may
// change to. Every change goes through changeStatus, which refuses any
// other; a new status is its constant and its row here (plus the edges
// into it). docs/ARCHITECTURE.md draws this table.
//
//	creating → running (booted, or a warm sandbox adopted) | failed | sleeping (recovery)
//	running → sleeping (idle, evicted, recovery) | stopped (request) | failed (agent died)
//	running → paused (gVisor: checkpointed to disk, by request, idle or evicted)
//	paused → running (restored) | stopped (request: the checkpoint is dropped) | failed (restore failed)
//	sleeping | stopped | failed → running (any call) | failed (the start failed)
//	sleeping → stopped (request)
//	running | sleeping | paused | stopped | failed → lost (its files are gone)
//	any → destroying → (row deleted; event "destroyed")
var lifecycle = []struct {
	status Status
	next   []Status
}{
	{StatusCreating, []Status{StatusRunning, StatusFailed, StatusSleeping, StatusDestroying}},
	{StatusRunning, []Status{StatusSleeping, StatusPaused, StatusStopped, StatusFailed, StatusDestroying, StatusLost}},
	{StatusSleeping, []Status{StatusRunning, StatusStopped, StatusFailed, StatusDestroying, StatusLost}},
	{StatusPaused, []Status{StatusRunning, StatusStopped, StatusFailed, StatusDestroying, StatusLost}},
	{StatusStopped, []Status{StatusRunning, StatusFailed, StatusDestroying, StatusLost}},
	{StatusFailed, []Status{StatusRunning, StatusFailed, StatusDestroying, StatusLost}},
	{StatusDestroying, []Status{StatusDestroying}},
	{StatusLost, []Status{StatusDestroying}},
}

// Statuses lists every status, in lifecycle order.
func Statuses() []Status {
	out := make([]Status, len(lifecycle))
	for i, row := range lifecycle {
		out[i] = row.status
	}
	return out
}

// CanChange reports whether the lifecycle allows from → to.
func CanChange(from, to Status) bool {
	for _, row := range lifecycle {
		if row.status == from {
			return slices.Contains(row.next, to)
		}
	}
	return false
}

// ErrConflict: the sandbox's status does not allow what was asked (e.g.
// starting a sandbox that is being destroyed).
var ErrConflict = errors.New("sandbox status conflict")

// errTransition is a change the lifecycle does not allow: a bug in the
// manager, refused rather than recorded.
var errTransition = errors.New("invalid sandbox status transition")

// state is b's status. b.mu is held.
func (b *box) state() Status { return Status(b.rec.Status) }

// requireStatus refuses op unless b is in one of allowed. b.mu is held.
func requireStatus(b *box, op string, allowed ...Status) error {
	if slices.Contains(allowed, b.state()) {
		return nil
	}
	if b.state() == StatusLost {
		return fmt.Errorf("%w: cannot %s sandbox %s: %s; destroy it", ErrLost, op, b.id, b.rec.StatusReason)
	}
	return fmt.Errorf("%w: cannot %s sandbox %s while it is %s", ErrConflict, op, b.id, b.state())
}

// changeStatus moves b to status to with reason: checked against the
// lifecycle, written to the registry, and only then to memory, so that
// nobody (List, metrics, the events the caller publishes next) is told of
// a status the registry does not hold. A refused change or a failed write
// leaves b as it was. b.mu is held.
//
// The write does not follow the caller's cancellation: a change that
// happened on the host (a container started or torn down) must be
// recorded even when the request that caused it went away.
func (m *Manager) changeStatus(ctx context.Context, b *box, to Status, reason string) error {
	from := b.state()
	if !CanChange(from, to) {
		m.log.Error("refused sandbox status change", "sandbox", b.id, "from", from, "to", to)
		return fmt.Errorf("%w: sandbox %s from %q to %q", errTransition, b.id, from, to)
	}
	now := m.now().UTC()
	if err := m.opts.Store.SetStatus(context.WithoutCancel(ctx), b.id, string(to), reason, now); err != nil {
		m.log.Error("recording sandbox status", "sandbox", b.id, "status", to, "err", err)
		return fmt.Errorf("recording sandbox %s as %s: %w", b.id, to, err)
	}
	b.rec.Status, b.rec.StatusReason, b.rec.StatusChangedAt = string(to), reason, now
	b.status.Store(to)
	return nil
}

// failLocked records that b's container is gone without being asked to
// (its agent died or stopped answering): whatever is left is torn down,
// and b is marked failed so that the next call starts it again. If the
// registry cannot be written, b stays running without a container, which
// the next start takes for the same failure. b.mu is held.
func (m *Manager) failLocked(ctx context.Context, b *box, reason string) error {
	if err := m.teardown(ctx, b); err != nil {
		m.log.Error("cleaning up a failed sandbox", "sandbox", b.id, "err", err)
	}
	if err := m.changeStatus(ctx, b, StatusFailed, reason); err != nil {
		return err
	}
	m.emit(b, EventFailed)
	return nil
}
