package sandbox

import (
	"context"
	"net/netip"
)

// Network is what the manager needs from the host's network plumbing
// (implemented over internal/network by the daemon).
type Network interface {
	// Attach creates (or repairs) the sandbox's network namespace. It is
	// idempotent.
	Attach(ctx context.Context, key string, req NetworkRequest) (NetworkEndpoint, error)
	// Detach removes everything Attach made; absent parts are fine.
	Detach(ctx context.Context, key string) error
	// Keys lists the sandbox keys that have network state on the host.
	Keys() ([]string, error)
	// MaxSlots is the number of address slots of internet mode.
	MaxSlots() int
	// DNS lists the name servers sandboxes in internet mode may use.
	DNS() []netip.Addr
	// SetPolicy replaces the egress policy of key's attached network in
	// internet mode (req's Mode, Slot and AllowHostCIDRs are ignored).
	SetPolicy(ctx context.Context, key string, req NetworkRequest) error
}

// NetworkRequest says what network a sandbox gets.
type NetworkRequest struct {
	Mode           string
	Slot           int
	AllowCIDRs     []netip.Prefix
	AllowHostCIDRs []netip.Prefix
	// SandboxID names the sandbox (for what the network records of it).
	SandboxID string
	// The egress policy by name and address: domain patterns (canonical),
	// denied destinations and the default.
	AllowDomains, DenyDomains []string
	DenyCIDRs                 []netip.Prefix
	DefaultDeny               bool
}

// NetworkEndpoint is a sandbox's network as set up.
type NetworkEndpoint struct {
	NetnsPath string
	Address   netip.Addr
	Gateway   netip.Addr
}
