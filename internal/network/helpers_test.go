package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// These tests change the host for real, as root: namespaces, veths and
// nftables tables. Each Manager gets its own table, its own interface prefix ("n" and two
// letters from the process ID and a sequence number, where the daemon uses
// "sbx" and test daemons "q"; a Manager treats every interface with its prefix
// as its own, and its cleanup destroys them, so no two Managers, here or in a
// test daemon running beside these tests, may share one), its own /24 in
// 10.231.0.0/16 and a NetnsDir under t.TempDir(). Tests remove everything they
// made, and test traffic only goes to loopback and to links and namespaces the
// test creates. They leave net.ipv4.ip_forward on: turning it back off would
// cut the sandboxes of daemons running beside them (the e2e tests').

var testSeq atomic.Int32

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (creates network namespaces, veths and nftables tables)")
	}
}

// newTestManager returns a set-up Manager with its own table, subnet and
// NetnsDir, torn down (with all its sandboxes) when the test ends.
func newTestManager(t testing.TB, dns ...netip.Addr) *Manager {
	t.Helper()
	return newTestManagerWith(t, func(c *Config) { c.DNS = dns })
}

// newTestManagerWith is newTestManager with edit applied to the Config.
func newTestManagerWith(t testing.TB, edit func(*Config)) *Manager {
	t.Helper()
	requireRoot(t)
	n := testSeq.Add(1)
	v := os.Getpid()*31 + int(n)
	prefix := fmt.Sprintf("n%c%c", 'a'+v%26, 'a'+(v/26)%26)
	subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 231, byte(n), 0}), 24)
	requireUnusedRange(t, subnet)
	cfg := Config{
		NetnsDir:        filepath.Join(t.TempDir(), "netns"),
		Subnet:          subnet,
		Table:           fmt.Sprintf("sandboxd_test_%d_%d", os.Getpid(), n),
		InterfacePrefix: prefix,
	}
	edit(&cfg)
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		keys, err := m.List()
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, k := range keys {
			if err := m.Destroy(context.Background(), k); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if err := m.Teardown(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		m.Close()
		checkThreadsInHostNetns(t)
	})
	if err := m.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// requireUnusedRange skips the test if the host already routes into p: test
// traffic must only ever reach what the test creates.
func requireUnusedRange(t testing.TB, p netip.Prefix) {
	t.Helper()
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 0}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		rp, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		if netip.PrefixFrom(rp.Unmap(), ones).Overlaps(p) && ones > 0 {
			t.Skipf("skipping: host already routes %s, which overlaps the test range %s", r.Dst, p)
		}
	}
}

// checkThreadsInHostNetns fails if any thread of the test binary is in a
// network namespace other than the process's: every namespace switch must be
// undone (or its thread discarded).
func checkThreadsInHostNetns(t testing.TB) {
	t.Helper()
	want, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread exited meanwhile
		}
		if got != want {
			t.Errorf("thread %s is in %s, want %s", task.Name(), got, want)
		}
	}
}

func randomKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

func mustCreate(t testing.TB, m *Manager, key string, opts CreateOptions) *Endpoint {
	t.Helper()
	ep, err := m.Create(context.Background(), key, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

const greeting = "hello\n"

// serveGreeting accepts connections on ln and writes greeting to each.
func serveGreeting(t testing.TB, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, greeting)
			c.Close()
		}
	}()
}

// listenHost starts a greeting server on the host at addr ("ip:port").
func listenHost(t testing.TB, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveGreeting(t, ln)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// listenIn starts a greeting server inside the namespace at netnsPath.
func listenIn(t testing.TB, netnsPath, addr string) netip.AddrPort {
	t.Helper()
	var ln net.Listener
	err := DoNetns(netnsPath, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	serveGreeting(t, ln)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// blockedWait is how long a dial waits before a dropped SYN counts as
// "not reachable".
const blockedWait = 400 * time.Millisecond

// reach dials to from inside the namespace of ep and reads the greeting.
func reach(ep *Endpoint, to netip.AddrPort, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := DialContext(ctx, ep.NetnsPath, "tcp", to.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != greeting {
		return fmt.Errorf("read %q, want %q", line, greeting)
	}
	return nil
}

func wantReachable(t testing.TB, ep *Endpoint, to netip.AddrPort) {
	t.Helper()
	if err := reach(ep, to, 3*time.Second); err != nil {
		t.Errorf("%s -> %s: %v, want reachable", ep.Key, to, err)
	}
}

func wantUnreachable(t testing.TB, ep *Endpoint, to netip.AddrPort) {
	t.Helper()
	if err := reach(ep, to, blockedWait); err == nil {
		t.Errorf("%s -> %s: reachable, want blocked", ep.Key, to)
	}
}

// addHostAddrs puts addrs on a new link of the host, standing in for one of
// the host's own networks. The link is one end of a veth pair whose other
// end stays on the host too (the dummy driver is not in every kernel).
func addHostAddrs(t testing.TB, addrs ...netip.Prefix) {
	t.Helper()
	for _, a := range addrs {
		requireUnusedRange(t, a)
	}
	suffix := randomKey(t)[1:]
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tnd" + suffix}, PeerName: "tne" + suffix}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netlink.LinkDel(v); err != nil {
			t.Errorf("deleting %s: %v", v.Name, err)
		}
	})
	for _, a := range addrs {
		if err := netlink.AddrAdd(v, &netlink.Addr{IPNet: ipNet(a)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(v); err != nil {
		t.Fatal(err)
	}
}

// upstream is a namespace that plays "the internet" and "the LAN" for
// sandboxes: it hangs off the host on a veth that is not a sandbox's.
type upstream struct {
	netnsPath string
	public    netip.Addr // upstream's public-range address
	private   netip.Addr // upstream's private-range address
	hostSide  netip.Addr // host's address on the public range
}

var (
	upstreamPublic  = netip.MustParsePrefix("198.51.100.0/30") // TEST-NET-2
	upstreamPrivate = netip.MustParsePrefix("10.231.250.0/30")
)

func newUpstream(t testing.TB, m *Manager) *upstream {
	t.Helper()
	requireUnusedRange(t, upstreamPublic)
	requireUnusedRange(t, upstreamPrivate)
	key := randomKey(t)
	ep := mustCreate(t, m, key, CreateOptions{Mode: ModeNone})
	ns, err := os.Open(ep.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "tnu" + key[1:]},
		PeerName:      "up0",
		PeerNamespace: netlink.NsFd(int(ns.Fd())),
	}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(v) })
	second := func(p netip.Prefix, n int) netip.Addr {
		a := p.Addr()
		for range n {
			a = a.Next()
		}
		return a
	}
	for _, p := range []netip.Prefix{upstreamPublic, upstreamPrivate} {
		if err := netlink.AddrAdd(v, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(second(p, 1), 30))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(v); err != nil {
		t.Fatal(err)
	}
	err = m.Do(key, func() error {
		peer, err := netlink.LinkByName("up0")
		if err != nil {
			return err
		}
		for _, p := range []netip.Prefix{upstreamPublic, upstreamPrivate} {
			if err := netlink.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(second(p, 2), 30))}); err != nil {
				return err
			}
		}
		return netlink.LinkSetUp(peer)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &upstream{
		netnsPath: ep.NetnsPath,
		public:    second(upstreamPublic, 2),
		private:   second(upstreamPrivate, 2),
		hostSide:  second(upstreamPublic, 1),
	}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// allowSetElements lists the allow set of m's table as nft prints elements.
func allowSetElements(t testing.TB, m *Manager) []string {
	t.Helper()
	out, err := exec.Command("nft", "-j", "list", "set", "inet", m.cfg.Table, "allow").Output()
	if err != nil {
		t.Fatalf("nft list set: %v", err)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	var es []string
	for _, o := range doc.Nftables {
		if o.Set != nil {
			for _, e := range o.Set.Elem {
				es = append(es, string(e))
			}
		}
	}
	return es
}

// mounted reports whether path is a mount point in this mount namespace.
func mounted(t testing.TB, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// checkGone fails unless nothing of key's network is left on the host.
func checkGone(t testing.TB, m *Manager, key string) {
	t.Helper()
	if _, err := netlink.LinkByName(m.cfg.InterfacePrefix + key); !isNotFound(err) {
		t.Errorf("link %s%s still exists (err %v)", m.cfg.InterfacePrefix, key, err)
	}
	path := m.NetnsPath(key)
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (err %v)", path, err)
	}
	if mounted(t, path) {
		t.Errorf("%s is still mounted", path)
	}
	keys, err := m.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k == key {
			t.Errorf("List() still has %s", key)
		}
	}
	m.nftMu.Lock()
	_, tracked := m.allows[key]
	m.nftMu.Unlock()
	if tracked {
		t.Errorf("allow entries of %s still tracked", key)
	}
}

// lan is a namespace that plays a network the host sits on, with public
// addresses: the host has lanSubnet's first address on a veth to it, the
// namespace the second (lan.neighbour), which is also the host's gateway to
// lanBeyond, whose first address (lan.beyond) the namespace holds too.
type lan struct {
	netnsPath         string
	neighbour, beyond netip.Addr
}

var (
	lanSubnet = netip.MustParsePrefix("198.18.99.0/24")
	lanBeyond = netip.MustParsePrefix("198.18.100.0/24")
)

func newLAN(t testing.TB, m *Manager) *lan {
	t.Helper()
	requireUnusedRange(t, lanSubnet)
	requireUnusedRange(t, lanBeyond)
	key := randomKey(t)
	ep := mustCreate(t, m, key, CreateOptions{Mode: ModeNone})
	ns, err := os.Open(ep.NetnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: "tnl" + key[1:]},
		PeerName:      "lan0",
		PeerNamespace: netlink.NsFd(int(ns.Fd())),
	}
	if err := netlink.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(v) })
	hostSide := lanSubnet.Addr().Next()
	l := &lan{netnsPath: ep.NetnsPath, neighbour: hostSide.Next(), beyond: lanBeyond.Addr().Next()}
	if err := netlink.AddrAdd(v, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(hostSide, lanSubnet.Bits()))}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(v); err != nil {
		t.Fatal(err)
	}
	err = m.Do(key, func() error {
		peer, err := netlink.LinkByName("lan0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(l.neighbour, lanSubnet.Bits()))}); err != nil {
			return err
		}
		if err := netlink.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(l.beyond, 32))}); err != nil {
			return err
		}
		return netlink.LinkSetUp(peer)
	})
	if err != nil {
		t.Fatal(err)
	}
	route := &netlink.Route{Dst: ipNet(lanBeyond), Gw: l.neighbour.AsSlice()}
	if err := netlink.RouteAdd(route); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.RouteDel(route) })
	return l
}
