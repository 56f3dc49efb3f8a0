package sandbox

import (
	"context"
	"fmt"
)

// A container start is mostly CPU: the runtime's create and start, the
// agent's Go runtime, its shell. When a burst of creates starts them all
// at once, a small host shares its CPUs among every start, so each takes
// as long as the whole burst (100 creates on 2 CPUs: p50 7.6 s, p99
// 10.5 s). The boot gate lets Options.MaxBoots starts run at once and
// queues the rest in arrival order (a channel's waiting senders are
// served first come, first served), so the first callers get their
// sandboxes after a few starts' time, not after the burst's, and the
// host does not thrash between hundreds of half-started containers. The
// warm pool's refills queue like any start: they never overtake a named
// create.

// enterBoot waits for a turn to start a container, or for ctx to end.
// A nil error must be followed by leaveBoot.
func (m *Manager) enterBoot(ctx context.Context) error {
	select {
	case m.boots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for a turn to start: %w", ErrUnavailable, context.Cause(ctx))
	}
}

// leaveBoot ends a turn that enterBoot began.
func (m *Manager) leaveBoot() { <-m.boots }
