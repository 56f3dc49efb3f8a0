package network

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// sandboxIfName is the name of the sandbox's end of its veth, inside its
// namespace.
const sandboxIfName = "eth0"

// ensureLink makes sure the sandbox has a working veth for link: host side
// hostIf with the gateway address, eth0 in the namespace with the sandbox's
// address and a default route via the gateway. A complete one is kept as it
// is (the sandbox may be running and using it); anything else is deleted and
// built again.
func (m *Manager) ensureLink(hostIf string, link Link, ns *netns, undo *cleanup) error {
	host, err := m.host.LinkByName(hostIf)
	switch {
	case err == nil:
		ok, err := linkReady(m.host, host, ns.nl, link)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := m.host.LinkDel(host); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting incomplete %s: %w", hostIf, err)
		}
	case !isNotFound(err):
		return fmt.Errorf("looking up %s: %w", hostIf, err)
	}
	// An eth0 left in the namespace (its old host side gone) would take the
	// new peer's name.
	if old, err := ns.nl.LinkByName(sandboxIfName); err == nil {
		if err := ns.nl.LinkDel(old); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting stale %s in netns: %w", sandboxIfName, err)
		}
	} else if !isNotFound(err) {
		return fmt.Errorf("looking up %s in netns: %w", sandboxIfName, err)
	}
	return m.createLink(hostIf, link, ns, undo)
}

// createLink creates the veth pair with its peer directly inside the
// namespace (one RTM_NEWLINK; the peer's name is checked in the namespace, so
// the host's own eth0 does not clash) and configures both ends. The host side
// goes up last, so "host side up" means "complete" to anyone looking.
func (m *Manager) createLink(hostIf string, link Link, ns *netns, undo *cleanup) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostIf},
		PeerName:      sandboxIfName,
		PeerNamespace: netlink.NsFd(int(ns.file.Fd())),
	}
	if err := m.host.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", hostIf, err)
	}
	undo.push(func() error {
		if err := m.host.LinkDel(veth); err != nil && !isNotFound(err) {
			return fmt.Errorf("deleting veth %s: %w", hostIf, err)
		}
		return nil
	})
	if err := failpoint("veth"); err != nil {
		return err
	}

	// Host side. The /proc/sys/net/*/conf/<if> directories exist as soon as
	// the device is registered. IPv6 goes off before the link is up, so it
	// never gets a link-local address. Strict rp_filter is the kernel's own
	// anti-spoofing; the ruleset repeats it because "all" may loosen it.
	if err := writeSysctl("net/ipv6/conf/"+hostIf+"/disable_ipv6", "1"); err != nil && !isNotExist(err) {
		return err
	}
	if err := writeSysctl("net/ipv4/conf/"+hostIf+"/rp_filter", "1"); err != nil {
		return err
	}
	if err := m.host.AddrAdd(veth, addr(link.Gateway)); err != nil {
		return fmt.Errorf("adding %s to %s: %w", link.Gateway, hostIf, err)
	}

	// Sandbox side: the address, up, then the default route (a gateway route
	// needs an up link with the gateway on it).
	peer, err := ns.nl.LinkByName(sandboxIfName)
	if err != nil {
		return fmt.Errorf("finding %s in netns: %w", sandboxIfName, err)
	}
	if err := ns.nl.AddrAdd(peer, addr(link.Address)); err != nil {
		return fmt.Errorf("adding %s to %s: %w", link.Address, sandboxIfName, err)
	}
	if err := ns.nl.LinkSetUp(peer); err != nil {
		return fmt.Errorf("setting %s up: %w", sandboxIfName, err)
	}
	route := &netlink.Route{LinkIndex: peer.Attrs().Index, Gw: net.IP(link.Gateway.AsSlice())}
	if err := ns.nl.RouteAdd(route); err != nil {
		return fmt.Errorf("adding default route via %s: %w", link.Gateway, err)
	}
	if err := failpoint("link-configured"); err != nil {
		return err
	}

	if err := m.host.LinkSetUp(veth); err != nil {
		return fmt.Errorf("setting %s up: %w", hostIf, err)
	}
	return nil
}

// linkReady reports whether host and its peer are exactly what createLink
// builds for link.
func linkReady(hostNL *netlink.Handle, host netlink.Link, nsNL *netlink.Handle, link Link) (bool, error) {
	if host.Type() != "veth" || host.Attrs().Flags&net.FlagUp == 0 {
		return false, nil
	}
	peer, err := nsNL.LinkByName(sandboxIfName)
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("looking up %s in netns: %w", sandboxIfName, err)
	}
	// IFLA_LINK of a veth is its peer's ifindex (in the peer's namespace):
	// both pointing at each other means this eth0 is the host link's peer.
	if peer.Type() != "veth" || peer.Attrs().Flags&net.FlagUp == 0 ||
		host.Attrs().ParentIndex != peer.Attrs().Index || peer.Attrs().ParentIndex != host.Attrs().Index {
		return false, nil
	}
	for _, c := range []struct {
		nl   *netlink.Handle
		l    netlink.Link
		want netip.Addr
	}{{hostNL, host, link.Gateway}, {nsNL, peer, link.Address}} {
		var addrs []netlink.Addr
		err := retryDump(func() (err error) { addrs, err = c.nl.AddrList(c.l, netlink.FAMILY_V4); return err })
		if err != nil {
			return false, fmt.Errorf("listing addresses of %s: %w", c.l.Attrs().Name, err)
		}
		if len(addrs) != 1 || !addrs[0].IP.Equal(c.want.AsSlice()) {
			return false, nil
		}
		if ones, _ := addrs[0].Mask.Size(); ones != slotBits {
			return false, nil
		}
	}
	var routes []netlink.Route
	err = retryDump(func() (err error) { routes, err = nsNL.RouteList(peer, netlink.FAMILY_V4); return err })
	if err != nil {
		return false, fmt.Errorf("listing routes in netns: %w", err)
	}
	for _, r := range routes {
		isDefault := r.Dst == nil || (r.Dst.IP.IsUnspecified() && maskOnes(r.Dst.Mask) == 0)
		if isDefault && r.Gw.Equal(link.Gateway.AsSlice()) {
			return true, nil
		}
	}
	return false, nil
}

// removeLink deletes the sandbox's veth and any eth0 in its namespace (a
// sandbox switched to mode none keeps only lo).
func (m *Manager) removeLink(hostIf string, ns *netns) error {
	var errs []error
	if l, err := m.host.LinkByName(hostIf); err == nil {
		if err := m.host.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", hostIf, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("looking up %s: %w", hostIf, err))
	}
	if ns != nil {
		if l, err := ns.nl.LinkByName(sandboxIfName); err == nil {
			if err := ns.nl.LinkDel(l); err != nil && !isNotFound(err) {
				errs = append(errs, fmt.Errorf("deleting %s in netns: %w", sandboxIfName, err))
			}
		} else if !isNotFound(err) {
			errs = append(errs, fmt.Errorf("looking up %s in netns: %w", sandboxIfName, err))
		}
	}
	return errors.Join(errs...)
}

func addr(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(slotBits, 32)}}
}

func maskOnes(m net.IPMask) int {
	ones, _ := m.Size()
	return ones
}

// isNotFound reports whether err says a link does not exist.
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT)
}

// retryDump retries a netlink dump that the kernel interrupted because the
// dumped table changed meanwhile; its result would be inconsistent. On a
// host where thousands of links come and go (another daemon destroying its
// sandboxes), five tries in a row all met a change, so it tries for longer,
// pausing a little more each time, up to about two seconds in all.
func retryDump(dump func() error) error {
	var err error
	for attempt := range dumpAttempts {
		if err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return err
		}
		time.Sleep(min(time.Duration(attempt+1)*5*time.Millisecond, 100*time.Millisecond))
	}
	return err
}

// dumpAttempts bounds retryDump's tries.
const dumpAttempts = 25
