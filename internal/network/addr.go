package network

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// slotBits is the size of one sandbox link: a /30 holds the network address,
// the gateway (host side), the sandbox and the broadcast address.
const slotBits = 30

// maxKeyLen keeps prefix+key within IFNAMSIZ-1 (15) bytes with a 3-byte prefix.
const maxKeyLen = 12

// Link is the point-to-point link of one sandbox slot.
type Link struct {
	// Prefix is the /30 of the link.
	Prefix netip.Prefix
	// Gateway is the host side's address (first usable address).
	Gateway netip.Addr
	// Address is the sandbox's address on eth0 (second usable address).
	Address netip.Addr
}

// SlotCount is how many slots (one /30 each) subnet holds; valid slots are
// 0 to SlotCount-1. It is 0 for a prefix that is not IPv4 or is longer than /30.
func SlotCount(subnet netip.Prefix) int {
	if !subnet.IsValid() || !subnet.Addr().Is4() || subnet.Bits() > slotBits {
		return 0
	}
	return 1 << (slotBits - subnet.Bits())
}

// LinkForSlot returns the addresses of slot in subnet: slot n is the n-th /30,
// so the same slot always gets the same addresses.
func LinkForSlot(subnet netip.Prefix, slot int) (Link, error) {
	n := SlotCount(subnet)
	if n == 0 {
		return Link{}, fmt.Errorf("subnet %s: need an IPv4 prefix of /30 or shorter", subnet)
	}
	if slot < 0 || slot >= n {
		return Link{}, fmt.Errorf("slot %d out of range [0, %d) for subnet %s", slot, n, subnet)
	}
	base := subnet.Masked().Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += uint32(slot) << (32 - slotBits)
	at := func(off uint32) netip.Addr {
		x := v + off
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	return Link{
		Prefix:  netip.PrefixFrom(at(0), slotBits),
		Gateway: at(1),
		Address: at(2),
	}, nil
}

// validKey checks a sandbox key: 1-12 of [a-z0-9]. Keys become interface and
// file names, so nothing else is allowed.
func validKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("invalid key %q: need 1-%d characters", key, maxKeyLen)
	}
	for _, c := range key {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fmt.Errorf("invalid key %q: only a-z and 0-9 are allowed", key)
		}
	}
	return nil
}

// normalizeCIDRs returns the IPv4 prefixes in ps, masked, sorted, without
// duplicates and without prefixes that another one contains. Interval sets
// reject overlapping elements, and a contained prefix adds nothing.
func normalizeCIDRs(ps []netip.Prefix) ([]netip.Prefix, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	in := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			return nil, errors.New("invalid CIDR")
		}
		if !p.Addr().Unmap().Is4() {
			return nil, fmt.Errorf("CIDR %s: only IPv4 is supported", p)
		}
		bits := p.Bits()
		if p.Addr().Is4In6() {
			bits -= 96
			if bits < 0 {
				return nil, fmt.Errorf("CIDR %s: only IPv4 is supported", p)
			}
		}
		in = append(in, netip.PrefixFrom(p.Addr().Unmap(), bits).Masked())
	}
	// Shortest prefixes first, so containers are kept before what they contain.
	slices.SortFunc(in, func(a, b netip.Prefix) int {
		if c := cmp.Compare(a.Bits(), b.Bits()); c != 0 {
			return c
		}
		return a.Addr().Compare(b.Addr())
	})
	var out []netip.Prefix
	for _, p := range in {
		covered := false
		for _, q := range out {
			if q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Bits(), b.Bits())
	})
	return out, nil
}

// withoutPrefix returns ps with every address of cut taken out: a prefix
// inside cut is dropped, one that contains cut is split into the largest
// prefixes around it (0.0.0.0/0 without 10.203.0.0/16 is sixteen prefixes),
// others are kept. ps must be normalised (see normalizeCIDRs); so is the
// result, apart from its order.
func withoutPrefix(ps []netip.Prefix, cut netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		switch {
		case !p.Overlaps(cut):
			out = append(out, p)
		case p.Bits() >= cut.Bits(): // inside cut
		default:
			out = append(out, splitAround(p, cut)...)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// splitAround halves p until cut is one of the halves, keeping every half
// that does not hold cut.
func splitAround(p, cut netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for p.Bits() < cut.Bits() {
		lo := netip.PrefixFrom(p.Addr(), p.Bits()+1)
		hi := netip.PrefixFrom(lastAddr(lo).Next(), p.Bits()+1)
		if lo.Contains(cut.Addr()) {
			out, p = append(out, hi), lo
		} else {
			out, p = append(out, lo), hi
		}
	}
	return out
}

// lastAddr is the highest address of the IPv4 prefix p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= uint32(1)<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
