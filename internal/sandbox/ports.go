package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/sandboxd/sandboxd/internal/agentapi"
	"golang.org/x/sys/unix"
)

// PortDialer is what a Network offers when it can connect to a port inside
// a sandbox's network namespace (the preview proxy's only way in: the host
// cannot open connections into sandboxes).
type PortDialer interface {
	DialContext(ctx context.Context, netnsPath, network, address string) (net.Conn, error)
}

// AcquireExisting is Acquire for callers that must not create sandboxes
// (preview URLs, which anyone may send): it starts the sandbox id if it is
// not running, but fails with ErrNotFound if it does not exist.
func (m *Manager) AcquireExisting(ctx context.Context, id string) (*Lease, error) {
	lease, _, err := m.acquireExisting(ctx, id)
	return lease, err
}

// acquireExisting takes a lease like Acquire (keep the two in step) on an
// existing sandbox, and returns its network endpoint too.
func (m *Manager) acquireExisting(ctx context.Context, id string) (*Lease, NetworkEndpoint, error) {
	b := m.lock(id)
	if b == nil {
		return nil, NetworkEndpoint{}, ErrNotFound
	}
	defer b.mu.Unlock()
	if b.rec.ID == "" {
		return nil, NetworkEndpoint{}, ErrNotFound
	}
	if err := m.startLocked(ctx, b); err != nil {
		return nil, NetworkEndpoint{}, err
	}
	inst := b.running
	return m.newLease(b, inst), inst.endpoint, nil
}

// DialPort connects to port of the existing sandbox id from inside its
// network namespace, starting the sandbox if it is not running. It tries
// 127.0.0.1 first, which also reaches services bound to 0.0.0.0, and when
// nothing listens there, ::1 and the sandbox's own address, so that
// services bound only to those are found too. The connection does not
// hold a lease: callers hold one for as long as the connection serves a
// request.
func (m *Manager) DialPort(ctx context.Context, id string, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("%w: port %d", ErrInvalid, port)
	}
	lease, ep, err := m.acquireExisting(ctx, id)
	if err != nil {
		return nil, err
	}
	defer lease.Release()
	if lease.Runtime == RuntimeGVisor {
		return dialThroughAgent(ctx, lease.Transport, port)
	}
	d, ok := m.opts.Network.(PortDialer)
	if !ok {
		return nil, fmt.Errorf("%w: this host's network cannot dial into sandboxes", ErrUnavailable)
	}
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	if ep.Address.IsValid() {
		addrs = append(addrs, ep.Address)
	}
	var first error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, ep.NetnsPath, "tcp", net.JoinHostPort(a.String(), strconv.Itoa(port)))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.EADDRNOTAVAIL) &&
			!errors.Is(err, unix.ENETUNREACH) && !errors.Is(err, unix.EAFNOSUPPORT) {
			break
		}
	}
	return nil, first
}

// dialThroughAgent connects to port in a gVisor sandbox through its agent
// (agentapi.Dial): gVisor's network stack lives in its Sentry, out of
// reach of a dial in the sandbox's network namespace. A port nothing
// listens on is ECONNREFUSED, as a direct dial would be.
func dialThroughAgent(ctx context.Context, rt http.RoundTripper, port int) (net.Conn, error) {
	link, ok := rt.(*agentLink)
	if !ok {
		return nil, fmt.Errorf("%w: no connection to the agent", ErrUnavailable)
	}
	c, err := link.dial(ctx)
	// A unix socket's connect fails with EAGAIN, rather than wait, while
	// its backlog is full (a burst of preview connections): retry briefly.
	for delay := time.Millisecond; errors.Is(err, unix.EAGAIN) && delay < time.Second; delay *= 2 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		c, err = link.dial(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	conn, err := agentapi.Dial(ctx, c, port)
	if err != nil && !errors.Is(err, unix.ECONNREFUSED) {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return conn, err
}
