package network

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// DefaultBlocked are the private and special-purpose IPv4 ranges a sandbox
// may not reach through the host unless allowed: Config.Blocked when it is
// nil.
var DefaultBlocked = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// allowEntry is what the allow sets hold for one sandbox: pairs
// (addr . cidr) for every cidr in the allow set (forwarded destinations),
// and for every host prefix in the allow_host set (the host's own
// addresses). Neither ever holds a pair whose destination is another
// sandbox: cidrs are clipped to leave Config.Subnet out, and the host's
// addresses are reached through the input hook only.
type allowEntry struct {
	addr  netip.Addr
	cidrs []netip.Prefix
	host  []netip.Prefix
	// egress is the sandbox's policy by name and address: its DenyCIDRs
	// go into the deny set, DefaultDeny puts addr into default_deny, and
	// every sandbox with a policy is in the counted set.
	egress Egress
}

func (a allowEntry) empty() bool { return len(a.cidrs) == 0 && len(a.host) == 0 && a.egress.empty() }

func (a allowEntry) equal(b allowEntry) bool {
	return a.addr == b.addr && slices.Equal(a.cidrs, b.cidrs) && slices.Equal(a.host, b.host) && a.egress.equal(b.egress)
}

// ruleset is the whole table, as `nft -f` input. The first two lines make the
// replacement atomic and idempotent: declaring the table creates it if it is
// missing, so the delete cannot fail, and nft applies the file as one
// transaction, so no packet ever sees the host without the table.
func (m *Manager) ruleset(allows map[string]allowEntry) string {
	var b strings.Builder
	t := m.cfg.Table
	sbx := fmt.Sprintf("%q", m.cfg.InterfacePrefix+"*")
	subnet := m.cfg.Subnet.String()
	fwd := m.cfg.DNSPort != 0
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	p("table inet %s {}", t)
	p("delete table inet %s", t)
	p("table inet %s {", t)
	p("\tcomment \"owned by sandboxd: rebuilt at daemon start, do not edit\"")
	p("")
	p("\t# (sandbox address . destination) pairs a sandbox may reach through the")
	p("\t# host although the rules below would drop them (never another sandbox);")
	p("\t# elements come and go with sandboxes.")
	p("\tset allow {")
	p("\t\ttype ipv4_addr . ipv4_addr")
	p("\t\tflags interval")
	if elems := allowElements(allows, func(a allowEntry) []netip.Prefix { return a.cidrs }); elems != "" {
		p("\t\telements = { %s }", elems)
	}
	p("\t}")
	p("")
	p("\t# (sandbox address . host address) pairs: the host's own services a")
	p("\t# sandbox may connect to, a separate and explicit choice.")
	p("\tset allow_host {")
	p("\t\ttype ipv4_addr . ipv4_addr")
	p("\t\tflags interval")
	if elems := allowElements(allows, func(a allowEntry) []netip.Prefix { return a.host }); elems != "" {
		p("\t\telements = { %s }", elems)
	}
	p("\t}")
	p("")
	p("\t# (sandbox address . destination) pairs a sandbox never reaches: its")
	p("\t# policy's denyCidrs, which win over everything else.")
	p("\tset deny {")
	p("\t\ttype ipv4_addr . ipv4_addr")
	p("\t\tflags interval")
	if elems := allowElements(allows, func(a allowEntry) []netip.Prefix { return a.egress.DenyCIDRs }); elems != "" {
		p("\t\telements = { %s }", elems)
	}
	p("\t}")
	p("")
	p("\t# Sandboxes whose policy's default is deny, and those with any policy")
	p("\t# (their denied packets are counted per sandbox).")
	p("\tset default_deny {")
	p("\t\ttype ipv4_addr")
	if elems := addrElements(allows, func(a allowEntry) bool { return a.egress.DefaultDeny }); elems != "" {
		p("\t\telements = { %s }", elems)
	}
	p("\t}")
	p("\tset counted {")
	p("\t\ttype ipv4_addr")
	p("\t\tcounter")
	if elems := addrElements(allows, func(a allowEntry) bool { return !a.egress.empty() }); elems != "" {
		p("\t\telements = { %s }", elems)
	}
	p("\t}")
	p("")
	p("\t# (sandbox address . address) pairs that DNS answers to the sandbox")
	p("\t# opened (allowed names) or closed (denied names), each for its TTL;")
	p("\t# filled by the daemon's DNS forwarder. A daemon restart empties them.")
	p("\tset dns_allow {")
	p("\t\ttype ipv4_addr . ipv4_addr")
	p("\t\tflags timeout")
	p("\t}")
	p("\tset dns_deny {")
	p("\t\ttype ipv4_addr . ipv4_addr")
	p("\t\tflags timeout")
	p("\t}")
	p("")
	p("\t# DNS servers sandboxes may query on port 53 wherever they are.")
	p("\tset dns {")
	p("\t\ttype ipv4_addr")
	if len(m.cfg.DNS) > 0 {
		p("\t\telements = { %s }", joinAddrs(m.cfg.DNS))
	}
	p("\t}")
	p("")
	p("\t# Private and special ranges (Config.Blocked), the host's own networks")
	p("\t# as found at start, and the sandbox subnet itself.")
	p("\tset blocked {")
	p("\t\ttype ipv4_addr")
	p("\t\tflags interval")
	p("\t\telements = { %s }", joinPrefixes(m.blocked))
	p("\t}")
	p("")
	p("\t# Before conntrack: no IPv6, and a sandbox may only send from the address")
	p("\t# routed to its own veth (strict reverse path, whatever rp_filter says).")
	p("\tchain prerouting {")
	p("\t\ttype filter hook prerouting priority raw; policy accept;")
	p("\t\tiifname %s meta nfproto ipv6 drop", sbx)
	p("\t\tiifname %s ip saddr != %s drop", sbx, subnet)
	p("\t\tiifname %s fib saddr . iif oif missing drop", sbx)
	if fwd {
		p("\t\t# Nor does anything else send from a sandbox's address.")
		p("\t\tiifname != \"lo\" iifname != %s ip saddr %s drop", sbx, subnet)
	}
	p("\t}")
	p("")
	if fwd {
		p("\t# A sandbox's DNS to its name servers goes to the daemon's forwarder,")
		p("\t# which answers by the sandbox's policy and fills the dns sets.")
		p("\tchain dns_redirect {")
		p("\t\ttype nat hook prerouting priority dstnat; policy accept;")
		p("\t\tiifname %s ip daddr @dns meta l4proto { tcp, udp } th dport 53 redirect to :%d", sbx, m.cfg.DNSPort)
		if m.cfg.CheckPort != 0 {
			p("\t\t# Ports 80 and 443 of addresses names opened or closed: by name.")
			p("\t\tiifname %s ip saddr . ip daddr @dns_allow tcp dport { 80, 443 } redirect to :%d", sbx, m.cfg.CheckPort)
			p("\t\tiifname %s ip saddr . ip daddr @dns_deny tcp dport { 80, 443 } redirect to :%d", sbx, m.cfg.CheckPort)
		}
		p("\t}")
		p("")
	}
	p("\tchain input {")
	p("\t\ttype filter hook input priority filter; policy accept;")
	p("\t\tiifname %s jump sandbox_to_host", sbx)
	if fwd {
		// Other hosts may not use the forwarder and the checker (they listen
		// on every address for the redirects). The host itself is not kept
		// out: a table left by a killed daemon would otherwise blackhole
		// whatever local service is later given the same port.
		p("\t\tiifname != \"lo\" meta l4proto { tcp, udp } th dport %d drop", m.cfg.DNSPort)
		if m.cfg.CheckPort != 0 {
			p("\t\tiifname != \"lo\" tcp dport %d drop", m.cfg.CheckPort)
		}
	}
	p("\t}")
	p("")
	p("\tchain sandbox_to_host {")
	p("\t\tct state established,related accept")
	if fwd {
		p("\t\tct status dnat meta l4proto { tcp, udp } th dport %d accept", m.cfg.DNSPort)
		if m.cfg.CheckPort != 0 {
			p("\t\tct status dnat tcp dport %d accept", m.cfg.CheckPort)
		}
	} else {
		p("\t\tip daddr @dns meta l4proto { tcp, udp } th dport 53 accept")
	}
	p("\t\tip saddr . ip daddr @allow_host accept")
	p("\t\tdrop")
	p("\t}")
	p("")
	p("\t# Ingress first: an accept in sandbox_egress ends the chain, so a")
	p("\t# destination's own protection must already have been applied.")
	p("\tchain forward {")
	p("\t\ttype filter hook forward priority filter; policy accept;")
	p("\t\toifname %s jump sandbox_ingress", sbx)
	p("\t\tiifname %s jump sandbox_egress", sbx)
	p("\t}")
	p("")
	p("\tchain sandbox_egress {")
	p("\t\tct state established,related accept")
	p("\t\tct state invalid drop")
	if fwd {
		p("\t\t# DNS only through the forwarder (redirected before this chain).")
		p("\t\tmeta l4proto { tcp, udp } th dport 53 goto denied")
	} else {
		p("\t\tip daddr @dns meta l4proto { tcp, udp } th dport 53 accept")
	}
	p("\t\tip saddr . ip daddr @deny goto denied")
	p("\t\tip saddr . ip daddr @allow accept")
	p("\t\toifname %s drop", sbx)
	p("\t\tip daddr @blocked drop")
	p("\t\tip saddr . ip daddr @dns_deny goto denied")
	p("\t\tip saddr . ip daddr @dns_allow accept")
	p("\t\tip saddr @default_deny goto denied")
	p("\t\taccept")
	p("\t}")
	p("")
	p("\t# What a sandbox's policy denies: counted per sandbox, then dropped.")
	p("\tchain denied {")
	p("\t\tip saddr @counted drop")
	p("\t\tdrop")
	p("\t}")
	p("")
	p("\t# Nothing from outside, another sandbox included, opens a connection")
	p("\t# into a sandbox, whatever the sender's allow elements say.")
	p("\tchain sandbox_ingress {")
	p("\t\tct state established,related return")
	p("\t\tdrop")
	p("\t}")
	p("")
	p("\t# Nor does the host: the preview proxy dials inside the namespace instead.")
	p("\tchain output {")
	p("\t\ttype filter hook output priority filter; policy accept;")
	p("\t\toifname %s ct state new drop", sbx)
	p("\t}")
	p("")
	p("\tchain postrouting {")
	p("\t\ttype nat hook postrouting priority srcnat; policy accept;")
	p("\t\tip saddr %s oifname != %s masquerade", subnet, sbx)
	p("\t}")
	p("}")
	return b.String()
}

// allowUpdate is the nft script that changes one sandbox's allow elements
// from old to new (either may be empty), in both sets.
func (m *Manager) allowUpdate(old, new allowEntry) string {
	var b strings.Builder
	m.setUpdate(&b, "allow", old.addr, old.cidrs, new.addr, new.cidrs)
	m.setUpdate(&b, "allow_host", old.addr, old.host, new.addr, new.host)
	m.setUpdate(&b, "deny", old.addr, old.egress.DenyCIDRs, new.addr, new.egress.DenyCIDRs)
	m.addrUpdate(&b, "default_deny", old.addr, old.egress.DefaultDeny, new.addr, new.egress.DefaultDeny)
	m.addrUpdate(&b, "counted", old.addr, !old.egress.empty(), new.addr, !new.egress.empty())
	return b.String()
}

// addrUpdate writes the commands that take oldAddr out of set (if had) and
// put newAddr in (if has), leaving an unchanged element alone (the counted
// set's counters live in its elements).
func (m *Manager) addrUpdate(b *strings.Builder, set string, oldAddr netip.Addr, had bool, newAddr netip.Addr, has bool) {
	if had == has && (oldAddr == newAddr || !has) {
		return
	}
	name := fmt.Sprintf("inet %s %s", m.cfg.Table, set)
	if had {
		fmt.Fprintf(b, "add element %s { %s }\n", name, oldAddr)
		fmt.Fprintf(b, "delete element %s { %s }\n", name, oldAddr)
	}
	if has {
		fmt.Fprintf(b, "add element %s { %s }\n", name, newAddr)
	}
}

func addrElements(allows map[string]allowEntry, in func(allowEntry) bool) string {
	var es []string
	for _, a := range allows {
		if in(a) {
			es = append(es, a.addr.String())
		}
	}
	slices.Sort(es)
	return strings.Join(es, ", ")
}

// setUpdate writes the commands that turn one sandbox's elements of set
// from (oldAddr . old) into (newAddr . new). Deleting a missing element
// fails the whole transaction, so each delete is preceded by an add of the
// same element, which makes it a no-op if the element is already there; an
// add followed by a delete of the same element removes it either way.
func (m *Manager) setUpdate(b *strings.Builder, set string, oldAddr netip.Addr, old []netip.Prefix, newAddr netip.Addr, new []netip.Prefix) {
	var dels, adds []string
	keep := map[string]bool{}
	for _, c := range new {
		keep[element(newAddr, c)] = true
	}
	have := map[string]bool{}
	for _, c := range old {
		e := element(oldAddr, c)
		have[e] = true
		if !keep[e] {
			dels = append(dels, e)
		}
	}
	for _, c := range new {
		if e := element(newAddr, c); !have[e] {
			adds = append(adds, e)
		}
	}
	name := fmt.Sprintf("inet %s %s", m.cfg.Table, set)
	if len(dels) > 0 {
		fmt.Fprintf(b, "add element %s { %s }\n", name, strings.Join(dels, ", "))
		fmt.Fprintf(b, "delete element %s { %s }\n", name, strings.Join(dels, ", "))
	}
	if len(adds) > 0 {
		fmt.Fprintf(b, "add element %s { %s }\n", name, strings.Join(adds, ", "))
	}
}

func element(addr netip.Addr, cidr netip.Prefix) string {
	return addr.String() + " . " + cidr.String()
}

func allowElements(allows map[string]allowEntry, of func(allowEntry) []netip.Prefix) string {
	var es []string
	for _, a := range allows {
		for _, c := range of(a) {
			es = append(es, element(a.addr, c))
		}
	}
	slices.Sort(es)
	return strings.Join(es, ", ")
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// nftTimeout bounds one nft run, including one made while undoing a failed
// Create after the caller's context is done.
const nftTimeout = 30 * time.Second

// runNft applies script with `nft -f -` as one transaction.
func (m *Manager) runNft(ctx context.Context, script string) error {
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.nftPath, "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
