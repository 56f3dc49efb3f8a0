package network

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostNetworks returns the host's own networks, which a sandbox must not
// reach through it unless allowed even when they are public addresses: the
// IPv4 subnets of its interfaces (and point-to-point peers) and the
// gateways of its main routing table. Left out: loopback interfaces (127/8
// is blocked anyway), this Manager's sandbox links (Config.Subnet is
// blocked anyway), and routes to 0.0.0.0/0 without a gateway, which would
// block everything.
func (m *Manager) hostNetworks() ([]netip.Prefix, error) {
	var links []netlink.Link
	if err := retryDump(func() (err error) { links, err = m.host.LinkList(); return err }); err != nil {
		return nil, fmt.Errorf("listing host links: %w", err)
	}
	skip := map[int]bool{}
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || strings.HasPrefix(a.Name, m.cfg.InterfacePrefix) && l.Type() == "veth" {
			skip[a.Index] = true
		}
	}
	var out []netip.Prefix
	add := func(ip net.IP, bits int) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok || !a.Unmap().Is4() || a.IsUnspecified() {
			return
		}
		if p := netip.PrefixFrom(a.Unmap(), bits).Masked(); p.Bits() > 0 {
			out = append(out, p)
		}
	}
	var addrs []netlink.Addr
	if err := retryDump(func() (err error) { addrs, err = m.host.AddrList(nil, netlink.FAMILY_V4); return err }); err != nil {
		return nil, fmt.Errorf("listing host addresses: %w", err)
	}
	for _, a := range addrs {
		if skip[a.LinkIndex] || a.IPNet == nil {
			continue
		}
		ones, _ := a.Mask.Size()
		add(a.IP, ones)
		if a.Peer != nil {
			add(a.Peer.IP, 32)
		}
	}
	var routes []netlink.Route
	err := retryDump(func() (err error) {
		routes, err = m.host.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing host routes: %w", err)
	}
	for _, r := range routes {
		if skip[r.LinkIndex] {
			continue
		}
		if r.Gw != nil {
			add(r.Gw, 32)
		}
		for _, nh := range r.MultiPath {
			if nh.Gw != nil {
				add(nh.Gw, 32)
			}
		}
		if r.Dst != nil && r.Gw == nil && len(r.MultiPath) == 0 && r.Scope == netlink.SCOPE_LINK {
			ones, _ := r.Dst.Mask.Size()
			add(r.Dst.IP, ones)
		}
	}
	return normalizeCIDRs(out)
}
