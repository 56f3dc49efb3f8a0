package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Egress is a sandbox's egress policy by name and address, on top of the
// blocked set (which only AllowCIDRs open). Names are matched by the DNS
// forwarder (internal/egress) against what the sandbox asks; the addresses
// an answer holds enter the dns_allow or dns_deny set for the answer's TTL.
type Egress struct {
	// AllowDomains and DenyDomains are domain patterns (ParseDomain): a
	// name, or "*." and a name for every name below it.
	AllowDomains, DenyDomains []string
	// DenyCIDRs are destinations the sandbox never reaches, whatever
	// AllowCIDRs or DNS answers say.
	DenyCIDRs []netip.Prefix
	// DefaultDeny drops what no allow entry or allowed name opened.
	DefaultDeny bool
}

func (e Egress) empty() bool {
	return len(e.AllowDomains) == 0 && len(e.DenyDomains) == 0 && len(e.DenyCIDRs) == 0 && !e.DefaultDeny
}

func (e Egress) equal(o Egress) bool {
	return slices.Equal(e.AllowDomains, o.AllowDomains) && slices.Equal(e.DenyDomains, o.DenyDomains) &&
		slices.Equal(e.DenyCIDRs, o.DenyCIDRs) && e.DefaultDeny == o.DefaultDeny
}

// hasDomains says whether the forwarder must track the sandbox's answers.
func (e Egress) hasDomains() bool { return len(e.AllowDomains) > 0 || len(e.DenyDomains) > 0 }

// normalizeEgress checks e's domains and sorts them, and normalises its
// DenyCIDRs, so that equal policies compare equal.
func normalizeEgress(e Egress) (Egress, error) {
	var err error
	out := Egress{DefaultDeny: e.DefaultDeny}
	if out.DenyCIDRs, err = normalizeCIDRs(e.DenyCIDRs); err != nil {
		return Egress{}, err
	}
	for _, l := range []struct{ in, out *[]string }{{&e.AllowDomains, &out.AllowDomains}, {&e.DenyDomains, &out.DenyDomains}} {
		for _, d := range *l.in {
			c, err := ParseDomain(d)
			if err != nil {
				return Egress{}, err
			}
			*l.out = append(*l.out, c)
		}
		slices.Sort(*l.out)
		*l.out = slices.Compact(*l.out)
	}
	return out, nil
}

// SetPolicy replaces the egress policy (allowCidrs and Egress) of key's
// running network in internet mode, at once: one nft transaction, then the
// conntrack entries of connections the new policy denies are deleted, so
// they are cut rather than kept alive as established. The sandbox's
// allowHostCidrs stay as they are.
func (m *Manager) SetPolicy(ctx context.Context, key string, allowCIDRs []netip.Prefix, e Egress) error {
	cidrs, err := normalizeCIDRs(allowCIDRs)
	if err != nil {
		return fmt.Errorf("setting policy of %s: %w", key, err)
	}
	if e, err = normalizeEgress(e); err != nil {
		return fmt.Errorf("setting policy of %s: %w", key, err)
	}
	m.nftMu.Lock()
	var addr netip.Addr
	for a, k := range m.byAddr {
		if k == key {
			addr = a
		}
	}
	host := m.allows[key].host
	m.nftMu.Unlock()
	if !addr.IsValid() {
		return fmt.Errorf("setting policy of %s: no network in internet mode", key)
	}
	want := allowEntry{addr: addr, cidrs: withoutPrefix(cidrs, m.cfg.Subnet), host: host, egress: e}
	return m.setAllows(ctx, key, want, nil)
}

// Verdict is what a policy says of a name.
type Verdict int

const (
	// Allowed names are answered; their addresses are opened.
	Allowed Verdict = iota
	// Denied names get NXDOMAIN; whatever addresses they have are closed.
	Denied
)

// Decide says what e makes of name (lower case, no trailing dot): deny
// patterns win over allow patterns, and names neither lists are allowed
// unless DefaultDeny. listed says whether a pattern matched.
func (e Egress) Decide(name string) (v Verdict, listed bool) {
	if matchAny(e.DenyDomains, name) {
		return Denied, true
	}
	if matchAny(e.AllowDomains, name) {
		return Allowed, true
	}
	if e.DefaultDeny {
		return Denied, false
	}
	return Allowed, false
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if MatchDomain(p, name) {
			return true
		}
	}
	return false
}

// MatchDomain says whether name matches pattern: "a.example" matches only
// itself, "*.a.example" every name below a.example (not a.example itself).
// Both must be in canonical form (ParseDomain).
func MatchDomain(pattern, name string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(name, suffix) && len(name) > len(suffix)
	}
	return pattern == name
}

// CanonicalName lower-cases name and strips one trailing dot, as DNS
// compares names.
func CanonicalName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// ParseDomain checks a domain pattern and returns its canonical form: a
// name of 1-253 bytes whose labels are 1-63 of a-z, 0-9, '-' and '_' (not
// starting or ending with '-'), optionally preceded by "*." for every name
// below it. A bare "*" is refused: that is what default "allow" says.
func ParseDomain(s string) (string, error) {
	d := CanonicalName(s)
	name, _ := strings.CutPrefix(d, "*.")
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("domain %q: need a name of 1-253 bytes, or *. and a name", s)
	}
	for _, label := range strings.Split(name, ".") {
		if err := checkLabel(label); err != nil {
			return "", fmt.Errorf("domain %q: %w", s, err)
		}
	}
	return d, nil
}

func checkLabel(l string) error {
	if l == "" || len(l) > 63 {
		return fmt.Errorf("label %q: need 1-63 bytes", l)
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for _, c := range l {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("label %q: only a-z, 0-9, '-' and '_' are allowed", l)
		}
	}
	return nil
}

// Resolved-address bounds: a sandbox cannot grow the table without limit
// by asking for many names.
const (
	// MaxResolved is how many (name, address) pairs one sandbox's answers
	// may hold open at once; past it, answers for new names are refused.
	MaxResolved = 4096
	// MinResolvedTTL and MaxResolvedTTL clamp an answer's TTL: resolvers
	// and programs keep answers a little past their TTL, and a TTL of days
	// would keep a moved name's old address open.
	MinResolvedTTL = 30 * time.Second
	MaxResolvedTTL = 24 * time.Hour
)

// resolvedAddrs are the addresses a sandbox's DNS answers opened or closed:
// for each address, the names that resolved to it and when each expires.
type resolvedAddrs map[netip.Addr]map[string]time.Time

// verdicts recomputes the set of each live address under e at now: an
// address any live name of which is denied is denied (a shared address is
// never opened by the allowed name beside it; ports 80 and 443 are checked
// by name instead), else allowed if a name of it is allowed and either
// listed or the default is deny. Addresses of names the policy does not
// care about enter neither set. The expiry of an element is its latest
// name's.
func (r resolvedAddrs) verdicts(e Egress, now time.Time) (allow, deny map[netip.Addr]time.Time) {
	allow, deny = map[netip.Addr]time.Time{}, map[netip.Addr]time.Time{}
	for a, names := range r {
		var denied, allowed bool
		var until time.Time
		for n, exp := range names {
			if !exp.After(now) {
				continue
			}
			if exp.After(until) {
				until = exp
			}
			v, listed := e.Decide(n)
			switch {
			case v == Denied:
				denied = true
			case listed || e.DefaultDeny:
				allowed = true
			}
		}
		switch {
		case denied:
			deny[a] = until
		case allowed:
			allow[a] = until
		}
	}
	return allow, deny
}

// prune drops names and addresses that expired, and reports how many
// (name, address) pairs are left.
func (r resolvedAddrs) prune(now time.Time) int {
	n := 0
	for a, names := range r {
		for name, exp := range names {
			if !exp.After(now) {
				delete(names, name)
			}
		}
		if len(names) == 0 {
			delete(r, a)
		}
		n += len(names)
	}
	return n
}

// ErrTooManyResolved is returned by Resolved when a sandbox's answers
// already hold MaxResolved addresses open.
var ErrTooManyResolved = errors.New("too many resolved addresses")

// PolicyFor returns the egress policy and address of the sandbox whose
// address is src; ok is false for an address no sandbox has.
func (m *Manager) PolicyFor(src netip.Addr) (key string, e Egress, ok bool) {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	key, ok = m.byAddr[src.Unmap()]
	if !ok {
		return "", Egress{}, false
	}
	return key, m.allows[key].egress, true
}

// Resolved records that name (canonical) resolved to addrs for ttl in the
// sandbox whose address is src, and updates its dns sets before it
// returns, so that the sandbox, once it has the answer, finds the
// addresses open. Nothing is recorded for a sandbox without domain lists.
func (m *Manager) Resolved(ctx context.Context, src netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error {
	ttl = min(max(ttl, MinResolvedTTL), MaxResolvedTTL)
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	key, ok := m.byAddr[src.Unmap()]
	if !ok || !m.allows[key].egress.hasDomains() {
		return nil
	}
	now := time.Now()
	r := m.resolved[key]
	if r == nil {
		r = resolvedAddrs{}
		m.resolved[key] = r
	}
	if r.prune(now)+len(addrs) > MaxResolved {
		return fmt.Errorf("sandbox %s: %w (%d)", key, ErrTooManyResolved, MaxResolved)
	}
	e := m.allows[key]
	oldAllow, oldDeny := r.verdicts(e.egress, now)
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		if r[a] == nil {
			r[a] = map[string]time.Time{}
		}
		if exp := now.Add(ttl); exp.After(r[a][name]) {
			r[a][name] = exp
		}
	}
	newAllow, newDeny := r.verdicts(e.egress, now)
	var b strings.Builder
	m.dnsUpdate(&b, e.addr, oldAllow, oldDeny, newAllow, newDeny, now, false)
	if b.Len() == 0 {
		return nil
	}
	if err := m.runNft(ctx, b.String()); err != nil {
		return fmt.Errorf("opening resolved addresses of %s: %w", key, err)
	}
	return nil
}

// dnsUpdate writes the commands that turn one sandbox's elements of the dns
// sets from the old verdicts to the new ones. An element whose expiry moved
// is deleted and added again (nft does not refresh a timeout on add), with
// the add-before-delete trick of setUpdate; force rewrites every element.
func (m *Manager) dnsUpdate(b *strings.Builder, src netip.Addr, oldAllow, oldDeny, newAllow, newDeny map[netip.Addr]time.Time, now time.Time, force bool) {
	for _, s := range []struct {
		set      string
		old, new map[netip.Addr]time.Time
	}{{"dns_allow", oldAllow, newAllow}, {"dns_deny", oldDeny, newDeny}} {
		name := fmt.Sprintf("inet %s %s", m.cfg.Table, s.set)
		var dels, adds []string
		for a, exp := range s.old {
			if nexp, ok := s.new[a]; force || !ok || !nexp.Equal(exp) {
				dels = append(dels, src.String()+" . "+a.String())
			}
		}
		for a, exp := range s.new {
			if oexp, ok := s.old[a]; force || !ok || !oexp.Equal(exp) {
				secs := max(int(exp.Sub(now).Seconds()+0.999), 1)
				adds = append(adds, fmt.Sprintf("%s . %s timeout %ds", src, a, secs))
			}
		}
		slices.Sort(dels)
		slices.Sort(adds)
		if len(dels) > 0 {
			fmt.Fprintf(b, "add element %s { %s }\n", name, strings.Join(dels, ", "))
			fmt.Fprintf(b, "delete element %s { %s }\n", name, strings.Join(dels, ", "))
		}
		if len(adds) > 0 {
			fmt.Fprintf(b, "add element %s { %s }\n", name, strings.Join(adds, ", "))
		}
	}
}

// cutDenied deletes the conntrack entries of connections from e.addr that
// e no longer lets through, so that "established" does not keep a newly
// denied connection alive. It must mirror sandbox_egress in the ruleset.
// Connections the DNS redirect made (to Config.DNS) are kept, and those
// redirected to the name checker are left to it.
func (m *Manager) cutDenied(e allowEntry, allow, deny map[netip.Addr]time.Time) error {
	if !e.addr.IsValid() {
		return nil
	}
	flows, err := m.host.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing conntrack entries: %w", err)
	}
	src := net.IP(e.addr.AsSlice())
	var filters []netlink.CustomConntrackFilter
	for _, f := range flows {
		if !f.Forward.SrcIP.Equal(src) {
			continue
		}
		// A connection the table redirected to the name checker is the
		// checker's to judge by name (egress.Checker.Recheck).
		if m.cfg.CheckPort != 0 && f.Reverse.SrcPort == m.cfg.CheckPort {
			continue
		}
		dst, ok := netip.AddrFromSlice(f.Forward.DstIP)
		if !ok || m.egressAllows(e, allow, deny, dst.Unmap(), f.Forward.DstPort) {
			continue
		}
		flt := &netlink.ConntrackFilter{}
		if err := flt.AddIP(netlink.ConntrackOrigSrcIP, src); err != nil {
			return fmt.Errorf("conntrack filter: %w", err)
		}
		if err := flt.AddIP(netlink.ConntrackOrigDstIP, f.Forward.DstIP); err != nil {
			return fmt.Errorf("conntrack filter: %w", err)
		}
		filters = append(filters, flt)
	}
	if len(filters) == 0 {
		return nil
	}
	if _, err := m.host.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...); err != nil {
		return fmt.Errorf("deleting conntrack entries of %s: %w", e.addr, err)
	}
	return nil
}

// Decide says whether the name checker may let a connection from the
// sandbox at src to dst through, naming name (TLS SNI or HTTP Host; ""
// for none): the address rules first, as in sandbox_egress, then the
// name. A connection that names nothing is refused: it reached the
// checker because its address was opened or closed by a name.
func (m *Manager) Decide(src, dst netip.Addr, name string) bool {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	key, ok := m.byAddr[src.Unmap()]
	if !ok {
		return false
	}
	e := m.allows[key]
	dst = dst.Unmap()
	in := func(ps []netip.Prefix) bool {
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(dst) })
	}
	switch {
	case in(e.egress.DenyCIDRs):
		return false
	case in(e.cidrs):
		return true
	case in(m.blocked), name == "":
		return false
	}
	v, listed := e.egress.Decide(name)
	if v == Denied {
		return false
	}
	return listed || !e.egress.DefaultDeny
}

// egressAllows says whether sandbox_egress would let a new connection from
// e.addr to dst through: the Go twin of the chain, for cutDenied.
func (m *Manager) egressAllows(e allowEntry, allow, deny map[netip.Addr]time.Time, dst netip.Addr, port uint16) bool {
	in := func(ps []netip.Prefix) bool {
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(dst) })
	}
	switch {
	case port == 53 && slices.Contains(m.cfg.DNS, dst):
		return true
	case in(e.egress.DenyCIDRs):
		return false
	case in(e.cidrs):
		return true
	case in(m.blocked):
		return false
	}
	if _, ok := deny[dst]; ok {
		return false
	}
	if _, ok := allow[dst]; ok {
		return true
	}
	return !e.egress.DefaultDeny
}

// DeniedPackets reads the counted set: by key, the packets of new
// connections each sandbox's policy dropped since its element was added.
func (m *Manager) DeniedPackets(ctx context.Context) (map[string]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, nftTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, m.nftPath, "-j", "list", "set", "inet", m.cfg.Table, "counted").Output()
	if err != nil {
		return nil, fmt.Errorf("reading the counted set: %w", err)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []struct {
					Elem struct {
						Val     string `json:"val"`
						Counter struct {
							Packets uint64 `json:"packets"`
						} `json:"counter"`
					} `json:"elem"`
				} `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("reading the counted set: %w", err)
	}
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	res := map[string]uint64{}
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			if a, err := netip.ParseAddr(e.Elem.Val); err == nil {
				if key, ok := m.byAddr[a]; ok {
					res[key] += e.Elem.Counter.Packets
				}
			}
		}
	}
	return res, nil
}

// AddressOf returns key's address in internet mode.
func (m *Manager) AddressOf(key string) (netip.Addr, bool) {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	for a, k := range m.byAddr {
		if k == key {
			return a, true
		}
	}
	return netip.Addr{}, false
}
