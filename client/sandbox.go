package client

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"

	"github.com/sandboxd/sandboxd/api"
)

// Sandbox is a handle to one sandbox, like the reference SDK's getSandbox.
// Making one does no I/O; the sandbox is created by the first call that
// needs it. A Sandbox is safe for concurrent use.
type Sandbox struct {
	c  *Client
	id string
	// opts is nil when the handle was made without options; then nothing
	// has to happen before the first call, which creates the sandbox with
	// the daemon's defaults if it does not exist.
	opts *api.SandboxOptions

	// ensureSem is held (a value sent) while the options are being PUT,
	// so concurrent first calls send them once; a select on it, unlike a
	// mutex, also honours the waiter's context.
	ensureSem chan struct{}
	// ensured is set once a PUT with opts has succeeded.
	ensured atomic.Bool
}

// Sandbox returns a handle to the sandbox id. Without options, the first
// call naming an unknown ID creates it with the daemon's defaults. With
// options, the handle's first call (any method but Destroy) first creates
// the sandbox with them, once, even under concurrent calls; if that fails,
// the next call tries again. Options only apply when the sandbox is created;
// an existing sandbox keeps its own.
//
// An invalid id is reported by the handle's first call, as an error matching
// ErrInvalid, without any request.
func (c *Client) Sandbox(id string, opts ...SandboxOption) *Sandbox {
	s := &Sandbox{c: c, id: id, ensureSem: make(chan struct{}, 1)}
	if len(opts) > 0 {
		o := api.SandboxOptions{}
		for _, opt := range opts {
			opt.applySandbox(&o)
		}
		s.opts = &o
	}
	return s
}

// ID returns the sandbox's ID.
func (s *Sandbox) ID() string { return s.id }

// Ensure creates the sandbox with the handle's options if it does not
// exist, and returns it. Its Created field says whether this call created
// it.
func (s *Sandbox) Ensure(ctx context.Context) (*api.Sandbox, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	return s.put(ctx)
}

// put sends the ensure request with the handle's options.
func (s *Sandbox) put(ctx context.Context) (*api.Sandbox, error) {
	body := s.opts
	if body == nil {
		body = &api.SandboxOptions{}
	}
	var sb api.Sandbox
	if err := s.c.doJSON(ctx, http.MethodPut, sandboxPath(s.id, ""), body, &sb); err != nil {
		return nil, err
	}
	if s.opts != nil {
		s.ensured.Store(true)
	}
	return &sb, nil
}

// prepare runs before every call but Ensure and Destroy: it validates the
// ID and, for a handle with options, makes sure they have been sent.
func (s *Sandbox) prepare(ctx context.Context) error {
	if err := validateID(s.id); err != nil {
		return err
	}
	if s.opts == nil || s.ensured.Load() {
		return nil
	}
	select {
	case s.ensureSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.ensureSem }()
	if s.ensured.Load() { // another call did it while we waited
		return nil
	}
	_, err := s.put(ctx)
	return err
}

// Info returns the sandbox's description. Without handle options it fails
// with an error matching ErrNotFound if the sandbox does not exist; with
// options, it creates the sandbox first like any other call.
func (s *Sandbox) Info(ctx context.Context) (*api.Sandbox, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var sb api.Sandbox
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, ""), nil, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// Destroy deletes the sandbox and everything in it, its disk included. It
// fails with an error matching ErrNotFound if the sandbox does not exist.
// A later call on the same handle creates a new sandbox (with the handle's
// options, if any).
func (s *Sandbox) Destroy(ctx context.Context) error {
	if err := validateID(s.id); err != nil {
		return err
	}
	err := s.c.doJSON(ctx, http.MethodDelete, sandboxPath(s.id, ""), nil, nil)
	if err == nil || errors.Is(err, ErrNotFound) {
		s.ensured.Store(false)
	}
	return err
}
