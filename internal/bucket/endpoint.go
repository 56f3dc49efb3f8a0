package bucket

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"
)

// ErrEndpointForbidden: a tenant's mount names an endpoint that resolves to
// an address the host keeps out of tenants' reach.
var ErrEndpointForbidden = errors.New("bucket endpoint not allowed")

// EndpointGuard decides which endpoints a tenant's bucket mount may name.
// s3fs runs on the host, so without it a tenant could make the host's
// s3fs connect to services only the host reaches: ones listening on
// loopback, a cloud's link-local metadata service, the host's own
// addresses, other sandboxes. Those are refused unless the operator allows
// them (--bucket-endpoint-allow).
type EndpointGuard struct {
	// Refuse are ranges refused beside the built-in ones (the sandbox
	// subnet).
	Refuse []netip.Prefix
	// Allow are the operator's exceptions: an address inside one is never
	// refused.
	Allow []netip.Prefix
	// Lookup resolves a host name; nil is the system resolver.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// HostAddrs lists the host's own addresses; nil reads its interfaces.
	HostAddrs func() []netip.Addr
}

// lookupTimeout bounds the resolution of an endpoint's name.
const lookupTimeout = 5 * time.Second

// Check resolves endpoint's host and refuses it when any of its addresses
// is refused: a name with one allowed and one refused address could be
// reached at either.
func (g EndpointGuard) Check(ctx context.Context, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		return fmt.Errorf("%w: %q has no host", ErrInvalid, endpoint)
	}
	_, err = g.Allowed(ctx, u.Hostname())
	return err
}

// Allowed resolves host and returns its addresses, or refuses it when any
// of them is refused.
func (g EndpointGuard) Allowed(ctx context.Context, host string) ([]netip.Addr, error) {
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	refused := g.refused()
	for _, a := range addrs {
		if why := refusal(a.Unmap(), refused, g.Allow); why != "" {
			return nil, fmt.Errorf("%w: %s resolves to %s, %s; an operator can allow it with --bucket-endpoint-allow", ErrEndpointForbidden, host, a.Unmap(), why)
		}
	}
	return addrs, nil
}

func (g EndpointGuard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	lookup := g.Lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: resolving %s: %v", ErrUnresolvable, host, err)
	}
	return addrs, nil
}

// ErrUnresolvable: the endpoint's name did not resolve.
var ErrUnresolvable = errors.New("bucket endpoint does not resolve")

// refusedRange is a range refused with the reason a caller reads.
type refusedRange struct {
	prefix netip.Prefix
	why    string
}

func (g EndpointGuard) refused() []refusedRange {
	var out []refusedRange
	for _, p := range g.Refuse {
		out = append(out, refusedRange{p, "inside the sandbox subnet"})
	}
	hostAddrs := g.HostAddrs
	if hostAddrs == nil {
		hostAddrs = interfaceAddrs
	}
	for _, a := range hostAddrs() {
		out = append(out, refusedRange{netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), "an address of the host itself"})
	}
	return out
}

// refusal says why a is refused, or "" when it is not.
func refusal(a netip.Addr, refused []refusedRange, allow []netip.Prefix) string {
	for _, p := range allow {
		if p.Contains(a) {
			return ""
		}
	}
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.IsUnspecified() || (a.Is4() && a.As4()[0] == 0):
		return "an unspecified address"
	case a.IsLinkLocalUnicast():
		return "a link-local address (where clouds serve instance metadata)"
	case a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast():
		return "a multicast address"
	}
	for _, r := range refused {
		if r.prefix.Contains(a) {
			return r.why
		}
	}
	return ""
}

// interfaceAddrs are the addresses of the host's interfaces.
func interfaceAddrs() []netip.Addr {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range ifAddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}
