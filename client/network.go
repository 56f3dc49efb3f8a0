package client

import (
	"context"
	"net/http"

	"github.com/sandboxd/sandboxd/api"
)

// Network returns the sandbox's egress policy and what it refused (how
// many attempts, the last names). It does not create the sandbox.
func (s *Sandbox) Network(ctx context.Context) (*api.NetworkStatus, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	var st api.NetworkStatus
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/network"), nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SetNetwork replaces the sandbox's egress policy as a whole; a running
// sandbox gets it at once, and its connections the new policy denies are
// cut. An invalid policy is an *Error with code INVALID_NETWORK_POLICY
// (errors.Is(err, ErrInvalid)) whose Details["entry"] names the entry.
func (s *Sandbox) SetNetwork(ctx context.Context, p api.NetworkPolicy) (*api.NetworkStatus, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	var st api.NetworkStatus
	if err := s.c.doJSON(ctx, http.MethodPut, sandboxPath(s.id, "/network"), &p, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
