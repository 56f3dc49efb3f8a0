package sandbox

import (
	"context"
	"errors"
	"time"
)

// cleanupTimeout bounds how long undoing a failed start may take.
const cleanupTimeout = 30 * time.Second

// cleanupStack collects undo steps while a sandbox is being set up; on
// failure they run in reverse order.
type cleanupStack struct {
	steps []func(context.Context) error
}

func (s *cleanupStack) push(f func(context.Context) error) { s.steps = append(s.steps, f) }

// run undoes everything pushed so far, newest first, with its own deadline
// (the caller's context may be the reason for the failure), and joins the
// errors.
func (s *cleanupStack) run() error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		errs = append(errs, s.steps[i](ctx))
	}
	s.steps = nil
	return errors.Join(errs...)
}
