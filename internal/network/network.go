package network

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Mode is what a sandbox's network namespace can reach.
type Mode string

const (
	// ModeNone gives the sandbox only its own loopback.
	ModeNone Mode = "none"
	// ModeInternet gives the sandbox a veth to the host, a default route and
	// NAT; the filter keeps the host, other sandboxes and private ranges out
	// of reach unless allowed.
	ModeInternet Mode = "internet"
)

// Defaults for Config fields left zero.
const (
	DefaultNetnsDir        = "/run/sandboxd/netns"
	DefaultTable           = "sandboxd"
	DefaultInterfacePrefix = "sbx"
)

// DefaultSubnet is the default pool of sandbox links: 16384 slots.
var DefaultSubnet = netip.MustParsePrefix("10.203.0.0/16")

// Config configures a Manager. Zero fields take the defaults above.
type Config struct {
	// NetnsDir is where sandbox namespaces are bind-mounted, one file per key.
	// It should be on a tmpfs (/run): the namespaces do not survive a reboot.
	NetnsDir string
	// Subnet is the IPv4 pool of sandbox links, one /30 per slot. Sandbox
	// traffic from it is masqueraded; it must not be used elsewhere on the host.
	Subnet netip.Prefix
	// DNS are the IPv4 DNS servers sandboxes may query (udp and tcp port 53)
	// even when they are private or host addresses. Loopback servers (e.g.
	// systemd-resolved's 127.0.0.53) cannot work: give upstream servers.
	DNS []netip.Addr
	// Table is the name of the nftables table (inet family) the Manager owns.
	// Tests use their own, so they never touch a running daemon's.
	Table string
	// InterfacePrefix starts the name of every host-side veth (prefix + key),
	// 1-3 characters a-z. The table treats every interface with this prefix as
	// one of its sandboxes, so two tables (a daemon and a test) must never
	// share a prefix.
	InterfacePrefix string
	// Blocked are the destinations beyond the host that sandboxes may not
	// reach unless a sandbox's AllowCIDRs name them. nil means
	// DefaultBlocked; an empty, non-nil slice blocks none of them.
	// Config.Subnet is always blocked.
	Blocked []netip.Prefix
	// OpenHostNetworks leaves the host's own networks (the subnets of its
	// interfaces and its gateways, found by Setup) out of the blocked set.
	// By default they are in it: the LAN and the router a host sits on are
	// its neighbours, even when their addresses are public.
	OpenHostNetworks bool
	// DNSPort, when not 0, is the port of the daemon's DNS forwarder on the
	// host (udp and tcp, every address): a sandbox's DNS to the servers in
	// DNS is redirected there, and its DNS to any other server is dropped.
	// 0 lets sandboxes query the servers in DNS directly (no domain policy).
	DNSPort uint16
	// CheckPort, when not 0 (and DNSPort is set), is the port of the
	// daemon's name checker (TCP, every address): a sandbox's connections
	// to ports 80 and 443 of addresses in the dns sets are redirected
	// there, to be let through by the name they carry.
	CheckPort uint16
}

func (c Config) withDefaults() Config {
	if c.NetnsDir == "" {
		c.NetnsDir = DefaultNetnsDir
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.InterfacePrefix == "" {
		c.InterfacePrefix = DefaultInterfacePrefix
	}
	c.DNS = slices.Clone(c.DNS)
	for i, a := range c.DNS {
		c.DNS[i] = a.Unmap()
	}
	slices.SortFunc(c.DNS, netip.Addr.Compare)
	c.DNS = slices.Compact(c.DNS)
	if c.Blocked == nil {
		c.Blocked = DefaultBlocked
	}
	c.Blocked = slices.Clone(c.Blocked)
	return c
}

// Validate reports what New would refuse in c, with the defaults filled
// in, without touching the host: a daemon checks its flags with it before
// it makes anything.
func (c Config) Validate() error { return c.withDefaults().validate() }

func (c Config) validate() error {
	if !filepath.IsAbs(c.NetnsDir) {
		return fmt.Errorf("netns dir %q: need an absolute path", c.NetnsDir)
	}
	if SlotCount(c.Subnet) == 0 {
		return fmt.Errorf("subnet %s: need an IPv4 prefix of /30 or shorter", c.Subnet)
	}
	if c.Subnet != c.Subnet.Masked() {
		return fmt.Errorf("subnet %s: host bits set (did you mean %s?)", c.Subnet, c.Subnet.Masked())
	}
	for _, a := range c.DNS {
		if !a.Is4() {
			return fmt.Errorf("DNS server %s: only IPv4 is supported", a)
		}
	}
	if _, err := normalizeCIDRs(c.Blocked); err != nil {
		return fmt.Errorf("blocked ranges: %w", err)
	}
	if !validName(c.Table, 64, true) {
		return fmt.Errorf("table %q: need 1-64 of a-z, A-Z, 0-9, _, starting with a letter", c.Table)
	}
	if !validName(c.InterfacePrefix, unix.IFNAMSIZ-1-maxKeyLen, false) {
		return fmt.Errorf("interface prefix %q: need 1-%d of a-z", c.InterfacePrefix, unix.IFNAMSIZ-1-maxKeyLen)
	}
	return nil
}

// validName accepts 1-max ASCII letters (lower case only unless table),
// and, for tables, digits and '_' after the first letter.
func validName(s string, max int, table bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z':
		case table && c >= 'A' && c <= 'Z':
		case table && i > 0 && (c >= '0' && c <= '9' || c == '_'):
		default:
			return false
		}
	}
	return true
}

// Manager creates and destroys sandbox networks on one host. Its methods are
// safe for concurrent use, but calls for the same key must be serialised by
// the caller (the sandbox manager does, per sandbox).
type Manager struct {
	cfg     Config
	nftPath string
	host    *netlink.Handle // in the host's namespace

	// nftMu serialises every change to the nftables table, so that the allow
	// set and allows never disagree. It guards the fields below.
	nftMu sync.Mutex
	setUp bool
	// blocked is the blocked set as Setup built it.
	blocked []netip.Prefix
	// allows is what the allow set holds, by key. Setup rebuilds the table
	// from it, so it outlives a second Setup but not a daemon restart: after
	// one, Create must be called again for every sandbox that is kept.
	allows map[string]allowEntry
	// byAddr finds a sandbox's key by its address, for the DNS forwarder.
	byAddr map[netip.Addr]string
	// resolved are the addresses each sandbox's DNS answers opened or
	// closed (egress.go), by key.
	resolved map[string]resolvedAddrs
}

// New checks cfg and returns a Manager. It changes nothing on the host; call
// Setup before the first Create. It must be called from a thread in the host's
// network namespace (any goroutine not locked by someone else).
func New(cfg Config) (*Manager, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("network config: %w", err)
	}
	nftPath, err := exec.LookPath("nft")
	if err != nil {
		return nil, fmt.Errorf("network: nft (apt package nftables) not found: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("network: netlink handle: %w", err)
	}
	return &Manager{cfg: cfg, nftPath: nftPath, host: h, allows: map[string]allowEntry{},
		byAddr: map[netip.Addr]string{}, resolved: map[string]resolvedAddrs{}}, nil
}

// Close releases the Manager's netlink sockets. It changes nothing on the
// host: sandboxes keep their networks and the table stays.
func (m *Manager) Close() error {
	m.host.Close()
	return nil
}

// SlotCount is how many slots the Manager's subnet holds.
func (m *Manager) SlotCount() int { return SlotCount(m.cfg.Subnet) }

// NetnsPath is where key's namespace is (or would be) mounted.
func (m *Manager) NetnsPath(key string) string {
	return filepath.Join(m.cfg.NetnsDir, key)
}

// Setup prepares the host at daemon start; it is idempotent. It creates
// NetnsDir, enables IPv4 forwarding and atomically replaces the nftables table.
// The blocked set takes the host's networks as they are now (unless
// Config.OpenHostNetworks): a network that appears later is not in it until
// the next Setup.
// The allow set of the new table holds what this Manager has added; in a
// fresh process that is nothing, so sandboxes that keep running across a
// daemon restart lose their allowed destinations (fail closed) until Create is
// called for them again.
func (m *Manager) Setup(ctx context.Context) error {
	if err := os.MkdirAll(m.cfg.NetnsDir, 0o755); err != nil {
		return fmt.Errorf("network setup: creating netns dir: %w", err)
	}
	if v, err := readSysctl("net/ipv4/ip_forward"); err != nil || strings.TrimSpace(v) != "1" {
		if err := writeSysctl("net/ipv4/ip_forward", "1"); err != nil {
			return fmt.Errorf("network setup: enabling forwarding: %w", err)
		}
	}
	var hostNets []netip.Prefix
	if !m.cfg.OpenHostNetworks {
		var err error
		if hostNets, err = m.hostNetworks(); err != nil {
			return fmt.Errorf("network setup: %w", err)
		}
	}
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	m.blocked = m.blockedSet(hostNets)
	// The rebuilt table's dns sets are empty: forget what they held.
	clear(m.resolved)
	if err := m.runNft(ctx, m.ruleset(m.allows)); err != nil {
		return fmt.Errorf("network setup: installing table %s: %w", m.cfg.Table, err)
	}
	m.setUp = true
	return nil
}

// Teardown deletes the nftables table; missing is fine. The daemon does not
// call it on shutdown (running sandboxes keep their filter while it restarts):
// it is for uninstalling and for tests. Sandboxes are left alone; Destroy them
// first.
func (m *Manager) Teardown(ctx context.Context) error {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	t := m.cfg.Table
	if err := m.runNft(ctx, fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", t, t)); err != nil {
		return fmt.Errorf("network teardown: deleting table %s: %w", t, err)
	}
	m.setUp = false
	clear(m.allows)
	clear(m.byAddr)
	clear(m.resolved)
	return nil
}

// CreateOptions are the settings of one sandbox network.
type CreateOptions struct {
	// Mode is ModeNone or ModeInternet; required.
	Mode Mode
	// Slot picks the sandbox's link addresses in internet mode (LinkForSlot).
	// The caller allocates slots; two live sandboxes must never share one.
	Slot int
	// AllowCIDRs are IPv4 destinations beyond the host, otherwise blocked
	// (private ranges, the host's networks), that the sandbox may reach.
	// They never open the host itself or another sandbox: what overlaps
	// Config.Subnet is clipped out, and the host's own addresses need
	// AllowHostCIDRs. Internet mode only. Overlaps are merged.
	AllowCIDRs []netip.Prefix
	// AllowHostCIDRs are addresses of the host itself (its interfaces' and
	// the sandboxes' gateways) that the sandbox may open connections to:
	// whatever listens there, on any port. Internet mode only.
	AllowHostCIDRs []netip.Prefix
	// Egress is the sandbox's policy by name and address. Internet mode
	// only; domains must be canonical (ParseDomain).
	Egress Egress
}

// Endpoint is a sandbox's network as created.
type Endpoint struct {
	Key  string
	Mode Mode
	// NetnsPath is the namespace file for the runtime to join (the OCI
	// spec's linux.namespaces path).
	NetnsPath string
	// Address is the sandbox's address on eth0, Gateway the host side's, and
	// HostInterface the host side's name; all zero in mode none.
	Address       netip.Addr
	Gateway       netip.Addr
	HostInterface string
	// AllowCIDRs is CreateOptions.AllowCIDRs normalised (masked, sorted,
	// without duplicates or prefixes another one contains) and without
	// Config.Subnet; AllowHostCIDRs is CreateOptions.AllowHostCIDRs
	// normalised.
	AllowCIDRs, AllowHostCIDRs []netip.Prefix
	// Egress is CreateOptions.Egress normalised.
	Egress Egress
}

// Create makes sure key's network exists as opts says and returns it. It is
// idempotent: for a complete network it changes nothing the sandbox could
// notice (only the allow set, if AllowCIDRs changed), a half-built one (a
// crash, a reboot that wiped /run) is completed or rebuilt, and a changed mode
// or slot rebuilds the link. On failure it undoes what it did, in reverse
// order, and returns the error; a namespace or link that existed before the
// call is left in place.
func (m *Manager) Create(ctx context.Context, key string, opts CreateOptions) (_ *Endpoint, err error) {
	if err := validKey(key); err != nil {
		return nil, fmt.Errorf("creating network: %w", err)
	}
	ep := &Endpoint{Key: key, Mode: opts.Mode, NetnsPath: m.NetnsPath(key)}
	var link Link
	switch opts.Mode {
	case ModeNone:
		if len(opts.AllowCIDRs) > 0 || len(opts.AllowHostCIDRs) > 0 || !opts.Egress.empty() {
			return nil, fmt.Errorf("creating network for %s: AllowCIDRs, AllowHostCIDRs and Egress need mode %q", key, ModeInternet)
		}
	case ModeInternet:
		if link, err = LinkForSlot(m.cfg.Subnet, opts.Slot); err != nil {
			return nil, fmt.Errorf("creating network for %s: %w", key, err)
		}
		if ep.AllowCIDRs, err = normalizeCIDRs(opts.AllowCIDRs); err != nil {
			return nil, fmt.Errorf("creating network for %s: %w", key, err)
		}
		ep.AllowCIDRs = withoutPrefix(ep.AllowCIDRs, m.cfg.Subnet)
		if ep.AllowHostCIDRs, err = normalizeCIDRs(opts.AllowHostCIDRs); err != nil {
			return nil, fmt.Errorf("creating network for %s: %w", key, err)
		}
		if ep.Egress, err = normalizeEgress(opts.Egress); err != nil {
			return nil, fmt.Errorf("creating network for %s: %w", key, err)
		}
		ep.Address, ep.Gateway = link.Address, link.Gateway
		ep.HostInterface = m.cfg.InterfacePrefix + key
		if !m.isSetUp() {
			// Without the table a sandbox would reach the host and the LAN.
			return nil, fmt.Errorf("creating network for %s: Setup has not run", key)
		}
	default:
		return nil, fmt.Errorf("creating network for %s: unknown mode %q", key, opts.Mode)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("creating network for %s: %w", key, err)
	}

	var undo cleanup
	defer func() {
		if err != nil {
			if uerr := undo.run(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undoing: %w", uerr))
			}
			err = fmt.Errorf("creating network for %s: %w", key, err)
		}
	}()
	ns, err := ensureNetns(ep.NetnsPath, &undo)
	if err != nil {
		return nil, err
	}
	defer ns.close()
	if err := failpoint("netns"); err != nil {
		return nil, err
	}

	hostIf := m.cfg.InterfacePrefix + key
	switch opts.Mode {
	case ModeNone:
		err = m.removeLink(hostIf, ns)
	case ModeInternet:
		err = m.ensureLink(hostIf, link, ns, &undo)
	}
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.setAllows(ctx, key, allowEntry{addr: link.Address, cidrs: ep.AllowCIDRs, host: ep.AllowHostCIDRs, egress: ep.Egress}, &undo); err != nil {
		return nil, err
	}
	if err := failpoint("allows"); err != nil {
		return nil, err
	}
	return ep, nil
}

// blockedSet is Config.Blocked, the host's networks and Config.Subnet,
// normalised.
func (m *Manager) blockedSet(hostNets []netip.Prefix) []netip.Prefix {
	// validate checked Config.Blocked, and hostNetworks returns IPv4 only.
	out, _ := normalizeCIDRs(slices.Concat(m.cfg.Blocked, hostNets, []netip.Prefix{m.cfg.Subnet}))
	return out
}

// Blocked returns the blocked set the last Setup installed: what no
// sandbox reaches through the host unless its AllowCIDRs say so.
func (m *Manager) Blocked() []netip.Prefix {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	return slices.Clone(m.blocked)
}

func (m *Manager) isSetUp() bool {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	return m.setUp
}

// setAllows makes key's elements of the allow set want, and pushes the way
// back onto undo (if not nil). It runs nft only when something changes, so a
// sandbox without AllowCIDRs costs no nft call at all. Connections the old
// elements let through and the new ones do not are removed from conntrack, or
// "established" would keep them alive.
func (m *Manager) setAllows(ctx context.Context, key string, want allowEntry, undo *cleanup) error {
	m.nftMu.Lock()
	defer m.nftMu.Unlock()
	// Every sandbox with an address is known to the DNS forwarder, policy
	// or not; a sandbox without an address (destroyed, mode none) is not.
	for a, k := range m.byAddr {
		if k == key && a != want.addr {
			delete(m.byAddr, a)
		}
	}
	if want.addr.IsValid() {
		m.byAddr[want.addr] = key
	}
	if want.empty() {
		want = allowEntry{}
	}
	old := m.allows[key]
	if old.equal(want) {
		return nil
	}
	if !m.setUp {
		return errors.New("updating allow set: Setup has not run")
	}
	// The dns sets' elements were decided under the old policy: decide them
	// again under the new one, in the same transaction. A new address
	// (another slot) or a policy without names starts afresh.
	now := time.Now()
	r := m.resolved[key]
	r.prune(now)
	oldAllow, oldDeny := r.verdicts(old.egress, now)
	if old.addr != want.addr || !want.egress.hasDomains() {
		r = nil
	}
	newAllow, newDeny := r.verdicts(want.egress, now)
	var b strings.Builder
	b.WriteString(m.allowUpdate(old, want))
	if old.addr != want.addr {
		m.dnsUpdate(&b, old.addr, oldAllow, oldDeny, nil, nil, now, false)
		m.dnsUpdate(&b, want.addr, nil, nil, newAllow, newDeny, now, false)
	} else {
		m.dnsUpdate(&b, want.addr, oldAllow, oldDeny, newAllow, newDeny, now, false)
	}
	if b.Len() > 0 {
		if err := m.runNft(ctx, b.String()); err != nil {
			return fmt.Errorf("updating allow set: %w", err)
		}
	}
	if want.empty() {
		delete(m.allows, key)
		delete(m.resolved, key)
	} else {
		m.allows[key] = want
		if r == nil {
			delete(m.resolved, key)
		}
	}
	if undo != nil {
		undo.push(func() error { return m.setAllows(context.Background(), key, old, nil) })
	}
	if err := m.forgetFlows(old, want); err != nil {
		return err
	}
	if old.addr == want.addr && !want.egress.empty() {
		return m.cutDenied(want, newAllow, newDeny)
	}
	return nil
}

// forgetFlows deletes the conntrack entries of connections from old.addr to
// destinations that old allowed and want does not.
func (m *Manager) forgetFlows(old, want allowEntry) error {
	var filters []netlink.CustomConntrackFilter
	gone := func(c netip.Prefix, kept []netip.Prefix) bool {
		return old.addr != want.addr || !slices.Contains(kept, c)
	}
	for _, c := range slices.Concat(old.cidrs, old.host) {
		if !gone(c, want.cidrs) || !gone(c, want.host) {
			continue
		}
		f := &netlink.ConntrackFilter{}
		if err := f.AddIP(netlink.ConntrackOrigSrcIP, net.IP(old.addr.AsSlice())); err != nil {
			return fmt.Errorf("conntrack filter: %w", err)
		}
		dst := &net.IPNet{IP: c.Addr().AsSlice(), Mask: net.CIDRMask(c.Bits(), 32)}
		if err := f.AddIPNet(netlink.ConntrackOrigDstIP, dst); err != nil {
			return fmt.Errorf("conntrack filter: %w", err)
		}
		filters = append(filters, f)
	}
	if len(filters) == 0 {
		return nil
	}
	if _, err := m.host.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...); err != nil {
		return fmt.Errorf("deleting conntrack entries of %s: %w", old.addr, err)
	}
	return nil
}

// Destroy removes key's network: its allow elements, its veth, and its
// namespace file (unmounted with MNT_DETACH, then removed). It is idempotent
// and fine for keys that never existed. It tries every step and joins the
// errors. Deleting a veth is slow in the kernel, not here: unregistering a
// device waits for RCU grace periods (20-35 ms on a 2-vCPU VM), mostly idle.
func (m *Manager) Destroy(ctx context.Context, key string) error {
	if err := validKey(key); err != nil {
		return fmt.Errorf("destroying network: %w", err)
	}
	var errs []error
	// Allow elements go first: once they are gone the slot's address can be
	// reused without inheriting them.
	if err := m.setAllows(ctx, key, allowEntry{}, nil); err != nil {
		errs = append(errs, err)
	}
	if err := m.removeLink(m.cfg.InterfacePrefix+key, nil); err != nil {
		errs = append(errs, err)
	}
	if err := removeNetns(m.NetnsPath(key)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("destroying network of %s: %w", key, err)
	}
	return nil
}

// List returns the keys that have a namespace file or a host-side veth,
// sorted: what a crash may have left behind, for garbage collection.
func (m *Manager) List() ([]string, error) {
	keys := map[string]bool{}
	entries, err := os.ReadDir(m.cfg.NetnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listing networks: %w", err)
	}
	for _, e := range entries {
		if validKey(e.Name()) == nil {
			keys[e.Name()] = true
		}
	}
	var links []netlink.Link
	if err := retryDump(func() (err error) { links, err = m.host.LinkList(); return err }); err != nil {
		return nil, fmt.Errorf("listing networks: %w", err)
	}
	for _, l := range links {
		key, ok := strings.CutPrefix(l.Attrs().Name, m.cfg.InterfacePrefix)
		if ok && l.Type() == "veth" && validKey(key) == nil {
			keys[key] = true
		}
	}
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// Do runs fn on an OS thread inside key's namespace (see DoNetns).
func (m *Manager) Do(key string, fn func() error) error {
	if err := validKey(key); err != nil {
		return err
	}
	return DoNetns(m.NetnsPath(key), fn)
}

// cleanup is a stack of undo steps.
type cleanup []func() error

func (c *cleanup) push(f func() error) { *c = append(*c, f) }

// run runs the steps in reverse order and joins their errors.
func (c cleanup) run() error {
	var errs []error
	for i := len(c) - 1; i >= 0; i-- {
		errs = append(errs, c[i]())
	}
	return errors.Join(errs...)
}

// testHookFail, when set by a test, makes Create fail after the named step.
var testHookFail func(step string) error

func failpoint(step string) error {
	if testHookFail != nil {
		return testHookFail(step)
	}
	return nil
}
