package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
)

func TestNoneMode(t *testing.T) {
	m := newTestManager(t)
	dummy := netip.MustParsePrefix("198.18.77.1/32")
	addHostAddrs(t, dummy)
	hostSrv := listenHost(t, "0.0.0.0:0")

	key := randomKey(t)
	ep := mustCreate(t, m, key, CreateOptions{Mode: ModeNone})
	if ep.Address.IsValid() || ep.Gateway.IsValid() || ep.HostInterface != "" {
		t.Errorf("endpoint = %+v, want no address, gateway or host interface", ep)
	}
	if ok, err := isNetnsMount(ep.NetnsPath); err != nil || !ok {
		t.Fatalf("isNetnsMount(%s) = %v, %v; want true", ep.NetnsPath, ok, err)
	}
	if _, err := netlink.LinkByName(m.cfg.InterfacePrefix + key); !isNotFound(err) {
		t.Errorf("host link for mode none exists (err %v)", err)
	}

	var links []string
	var loUp bool
	var v6 []netlink.Addr
	sysctls := map[string]string{}
	err := m.Do(key, func() error {
		ls, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range ls {
			links = append(links, l.Attrs().Name)
			if l.Attrs().Name == "lo" {
				loUp = l.Attrs().Flags&net.FlagUp != 0
			}
		}
		if v6, err = netlink.AddrList(nil, netlink.FAMILY_V6); err != nil {
			return err
		}
		for _, s := range []string{"net/ipv4/ping_group_range", "net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/lo/disable_ipv6"} {
			v, err := readSysctl(s)
			if err != nil {
				return err
			}
			sysctls[s] = strings.Join(strings.Fields(v), " ")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"lo"}, links); diff != "" {
		t.Errorf("links in netns (-want +got):\n%s", diff)
	}
	if !loUp {
		t.Error("lo is down")
	}
	if len(v6) != 0 {
		t.Errorf("IPv6 addresses in netns: %v", v6)
	}
	wantSysctls := map[string]string{
		"net/ipv4/ping_group_range":      "0 2147483647",
		"net/ipv6/conf/all/disable_ipv6": "1",
		"net/ipv6/conf/lo/disable_ipv6":  "1",
	}
	if diff := cmp.Diff(wantSysctls, sysctls); diff != "" {
		t.Errorf("sysctls in netns (-want +got):\n%s", diff)
	}

	// Nothing outside is reachable, and the failure is immediate: no route.
	to := netip.AddrPortFrom(dummy.Addr(), hostSrv.Port())
	err = reach(ep, to, blockedWait)
	if !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("none -> %s: %v, want ENETUNREACH", to, err)
	}
	// 127.0.0.1 is the sandbox's own loopback, where nothing listens.
	wantUnreachable(t, ep, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), hostSrv.Port()))
}

func TestInternetMode(t *testing.T) {
	m := newTestManager(t)
	dummy := netip.MustParsePrefix("198.18.77.1/32") // another host address
	addHostAddrs(t, dummy)
	up := newUpstream(t, m)
	hostSrv := listenHost(t, "0.0.0.0:0") // every host address, incl. gateways and 127.0.0.1
	upSrv := listenIn(t, up.netnsPath, "0.0.0.0:0")

	a := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 1})
	b := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 2})
	bSrv := listenIn(t, b.NetnsPath, "0.0.0.0:0")

	wantLink, _ := LinkForSlot(m.cfg.Subnet, 1)
	if a.Address != wantLink.Address || a.Gateway != wantLink.Gateway || a.HostInterface != m.cfg.InterfacePrefix+a.Key {
		t.Errorf("endpoint = %+v, want addresses of %+v on %s%s", a, wantLink, m.cfg.InterfacePrefix, a.Key)
	}

	port := func(addr netip.Addr, srv netip.AddrPort) netip.AddrPort {
		return netip.AddrPortFrom(addr, srv.Port())
	}
	var (
		ownGateway   = port(a.Gateway, hostSrv)
		otherGateway = port(b.Gateway, hostSrv)
		hostAddr     = port(dummy.Addr(), hostSrv)
		hostLoopback = port(netip.MustParseAddr("127.0.0.1"), hostSrv)
		otherSandbox = port(b.Address, bSrv)
		public       = port(up.public, upSrv)
		private      = port(up.private, upSrv)
	)

	t.Run("default", func(t *testing.T) {
		wantUnreachable(t, a, ownGateway)
		wantUnreachable(t, a, otherGateway)
		wantUnreachable(t, a, hostAddr)
		wantUnreachable(t, a, hostLoopback)
		wantUnreachable(t, a, otherSandbox)
		wantUnreachable(t, a, private)
		wantReachable(t, a, public)
	})

	t.Run("masquerade", func(t *testing.T) {
		// A server upstream sees the host, not the sandbox's address.
		var ln net.Listener
		err := DoNetns(up.netnsPath, func() (err error) { ln, err = net.Listen("tcp4", up.public.String()+":0"); return err })
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan netip.Addr, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- netip.Addr{}
				return
			}
			got <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
			c.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := DialContext(ctx, a.NetnsPath, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if src := <-got; src != up.hostSide {
			t.Errorf("upstream saw source %s, want the host's %s", src, up.hostSide)
		}
	})

	t.Run("allowed", func(t *testing.T) {
		a2 := mustCreate(t, m, a.Key, CreateOptions{
			Mode: ModeInternet, Slot: 1,
			AllowCIDRs:     []netip.Prefix{upstreamPrivate, netip.PrefixFrom(b.Address, 32)},
			AllowHostCIDRs: []netip.Prefix{netip.PrefixFrom(a.Gateway, 32), dummy, netip.MustParsePrefix("127.0.0.0/8")},
		})
		wantReachable(t, a2, ownGateway)
		wantReachable(t, a2, hostAddr)
		wantReachable(t, a2, private)
		wantReachable(t, a2, public)
		// Not named, so still blocked; the host's loopback is never
		// reachable, allowed or not; nor is another sandbox.
		wantUnreachable(t, a2, otherGateway)
		wantUnreachable(t, a2, hostLoopback)
		wantUnreachable(t, a2, otherSandbox)
		if !cmp.Equal(a2.AllowCIDRs, []netip.Prefix{upstreamPrivate}, cmpopts.EquateComparable(netip.Prefix{})) {
			t.Errorf("AllowCIDRs = %v, want only %s (the other sandbox clipped out)", a2.AllowCIDRs, upstreamPrivate)
		}
		// The allow is a's, not b's.
		wantUnreachable(t, b, ownGateway)
		wantUnreachable(t, b, hostAddr)
	})

	t.Run("allowing everything opens neither the host nor other sandboxes", func(t *testing.T) {
		everything := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		a2 := mustCreate(t, m, a.Key, CreateOptions{Mode: ModeInternet, Slot: 1, AllowCIDRs: everything})
		b2 := mustCreate(t, m, b.Key, CreateOptions{Mode: ModeInternet, Slot: 2, AllowCIDRs: everything})
		aSrv := listenIn(t, a2.NetnsPath, "0.0.0.0:0")
		wantReachable(t, a2, private)
		wantReachable(t, a2, public)
		for _, to := range []netip.AddrPort{ownGateway, otherGateway, hostAddr, hostLoopback, otherSandbox} {
			wantUnreachable(t, a2, to)
		}
		wantUnreachable(t, b2, port(a2.Address, aSrv))
		wantUnreachable(t, b2, otherGateway)
		// Everything of the host, too: still no other sandbox.
		a3 := mustCreate(t, m, a.Key, CreateOptions{Mode: ModeInternet, Slot: 1, AllowCIDRs: everything, AllowHostCIDRs: everything})
		wantReachable(t, a3, ownGateway)
		wantReachable(t, a3, otherGateway)
		wantReachable(t, a3, hostAddr)
		wantUnreachable(t, a3, otherSandbox)
		wantUnreachable(t, b2, port(a3.Address, aSrv))
	})

	t.Run("ingress holds even if the allow set names a sandbox", func(t *testing.T) {
		// Clipping keeps such elements out; the ingress chain must not
		// depend on it.
		a2 := mustCreate(t, m, a.Key, CreateOptions{Mode: ModeInternet, Slot: 1})
		elem := fmt.Sprintf("{ %s . %s/32 }", a2.Address, b.Address)
		if out, err := nftCmd("add", "element", "inet", m.cfg.Table, "allow", elem); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		defer nftCmd("delete", "element", "inet", m.cfg.Table, "allow", elem)
		wantUnreachable(t, a2, otherSandbox)
	})

	t.Run("allow removed", func(t *testing.T) {
		mustCreate(t, m, b.Key, CreateOptions{Mode: ModeInternet, Slot: 2})
		a3 := mustCreate(t, m, a.Key, CreateOptions{Mode: ModeInternet, Slot: 1})
		wantUnreachable(t, a3, ownGateway)
		wantUnreachable(t, a3, hostAddr)
		wantUnreachable(t, a3, otherSandbox)
		if es := allowSetElements(t, m); len(es) != 0 {
			t.Errorf("allow set = %v, want empty", es)
		}
	})

	t.Run("no ipv6", func(t *testing.T) {
		for _, ep := range []*Endpoint{a, b} {
			host, err := netlink.LinkByName(ep.HostInterface)
			if err != nil {
				t.Fatal(err)
			}
			if addrs, _ := netlink.AddrList(host, netlink.FAMILY_V6); len(addrs) != 0 {
				t.Errorf("%s has IPv6 addresses %v", ep.HostInterface, addrs)
			}
			var nsAddrs []netlink.Addr
			m.Do(ep.Key, func() (err error) { nsAddrs, err = netlink.AddrList(nil, netlink.FAMILY_V6); return err })
			if len(nsAddrs) != 0 {
				t.Errorf("netns of %s has IPv6 addresses %v", ep.Key, nsAddrs)
			}
		}
	})
}

// TestAllowRemovedCutsOpenConnections checks that taking an allow away also
// ends connections it let through: "established" must not outlive the rule.
func TestAllowRemovedCutsOpenConnections(t *testing.T) {
	m := newTestManager(t)
	target := netip.MustParsePrefix("198.18.77.1/32")
	addHostAddrs(t, target)
	ln, err := net.Listen("tcp4", target.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // echo server
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	key := randomKey(t)
	a := mustCreate(t, m, key, CreateOptions{Mode: ModeInternet, Slot: 1, AllowHostCIDRs: []netip.Prefix{target}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := DialContext(ctx, a.NetnsPath, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := func(msg string) error {
		c.SetDeadline(time.Now().Add(blockedWait))
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(c, buf)
		return err
	}
	if err := echo("one"); err != nil {
		t.Fatalf("echo while allowed: %v", err)
	}
	mustCreate(t, m, key, CreateOptions{Mode: ModeInternet, Slot: 1})
	if err := echo("two"); err == nil {
		t.Error("echo over a connection opened while allowed still works after the allow was removed")
	}
}

// TestHostNetworksAreBlocked repeats issue 11's item 9: a network the host
// sits on (here with public addresses, as on many servers) and its gateway
// were reachable from every sandbox, because only private ranges were
// blocked.
func TestHostNetworksAreBlocked(t *testing.T) {
	m := newTestManager(t)
	l := newLAN(t, m) // after Setup: not blocked yet
	srv := listenIn(t, l.netnsPath, "0.0.0.0:0")
	neighbour := netip.AddrPortFrom(l.neighbour, srv.Port())
	beyond := netip.AddrPortFrom(l.beyond, srv.Port())
	a := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 1})
	wantReachable(t, a, neighbour) // the hole, before the next Setup sees the network

	if err := m.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	blocked := m.Blocked()
	for _, p := range []netip.Prefix{lanSubnet, m.cfg.Subnet, netip.MustParsePrefix("10.0.0.0/8")} {
		if !slices.ContainsFunc(blocked, func(b netip.Prefix) bool { return b.Overlaps(p) && b.Bits() <= p.Bits() }) {
			t.Errorf("blocked set %v does not cover %s", blocked, p)
		}
	}
	wantUnreachable(t, a, neighbour) // the neighbour and gateway
	wantReachable(t, a, beyond)      // behind the gateway is not the host's own network
	a2 := mustCreate(t, m, a.Key, CreateOptions{Mode: ModeInternet, Slot: 1, AllowCIDRs: []netip.Prefix{netip.PrefixFrom(l.neighbour, 32)}})
	wantReachable(t, a2, neighbour)
}

// TestBlockedIsConfigurable: Config.Blocked replaces the default ranges and
// Config.OpenHostNetworks leaves the host's networks out.
func TestBlockedIsConfigurable(t *testing.T) {
	m := newTestManagerWith(t, func(c *Config) {
		c.Blocked = []netip.Prefix{lanBeyond}
		c.OpenHostNetworks = true
	})
	l := newLAN(t, m)
	up := newUpstream(t, m)
	if err := m.Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv := listenIn(t, l.netnsPath, "0.0.0.0:0")
	upSrv := listenIn(t, up.netnsPath, "0.0.0.0:0")
	a := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 1})
	wantReachable(t, a, netip.AddrPortFrom(l.neighbour, srv.Port()))
	wantReachable(t, a, netip.AddrPortFrom(up.private, upSrv.Port())) // 10/8 is no longer in the set
	wantUnreachable(t, a, netip.AddrPortFrom(l.beyond, srv.Port()))
	if diff := cmp.Diff([]netip.Prefix{m.cfg.Subnet, lanBeyond}, m.Blocked(), cmpopts.EquateComparable(netip.Prefix{})); diff != "" {
		t.Errorf("Blocked() (-want +got):\n%s", diff)
	}
}

func TestDNSAllowed(t *testing.T) {
	dns := netip.MustParsePrefix("198.18.77.53/32")
	m := newTestManager(t, dns.Addr())
	addHostAddrs(t, dns)
	srv53 := listenHost(t, dns.Addr().String()+":53")
	other := listenHost(t, dns.Addr().String()+":0")
	a := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 0})
	wantReachable(t, a, srv53)
	wantUnreachable(t, a, other)
}

// TestSpoofedSourceDropped has sandbox a send from sandbox b's address, which
// b is allowed to use towards a host address: only the reverse-path check
// stands between a and the host. UDP, so that a packet that gets in is seen
// even though its answer would go to b.
func TestSpoofedSourceDropped(t *testing.T) {
	m := newTestManager(t)
	target := netip.MustParsePrefix("198.18.77.1/32")
	addHostAddrs(t, target)
	pc, err := net.ListenPacket("udp4", target.Addr().String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := pc.LocalAddr().(*net.UDPAddr)

	a := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 1})
	b := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 2, AllowHostCIDRs: []netip.Prefix{target}})

	send := func(ep *Endpoint, from netip.Addr, msg string) {
		t.Helper()
		err := m.Do(ep.Key, func() error {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), to)
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte(msg))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	received := func() []string {
		var got []string
		buf := make([]byte, 64)
		for {
			pc.SetReadDeadline(time.Now().Add(blockedWait))
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return got
			}
			got = append(got, fmt.Sprintf("%s from %s", buf[:n], from.(*net.UDPAddr).IP))
		}
	}

	// a takes b's address as a second address on its eth0.
	err = m.Do(a.Key, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(b.Address, 32))})
	})
	if err != nil {
		t.Fatal(err)
	}
	send(b, b.Address, "legit")
	send(a, a.Address, "own")
	send(a, b.Address, "spoofed")
	want := []string{"legit from " + b.Address.String()}
	if diff := cmp.Diff(want, received()); diff != "" {
		t.Errorf("datagrams received (-want +got):\n%s", diff)
	}
}

func TestDialContext(t *testing.T) {
	m := newTestManager(t)
	a := mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 0})
	inner := listenIn(t, a.NetnsPath, "127.0.0.1:0")

	t.Run("reaches the sandbox's loopback", func(t *testing.T) {
		wantReachable(t, a, inner)
	})
	t.Run("the host's loopback is another one", func(t *testing.T) {
		c, err := net.DialTimeout("tcp4", inner.String(), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("host dial to %s succeeded; the server is inside the netns", inner)
		}
	})
	t.Run("refused", func(t *testing.T) {
		// The server listens on 127.0.0.1 only; 127.0.0.2 is also the
		// sandbox's loopback, and nothing listens there.
		err := reach(a, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), inner.Port()), time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial to a closed port: %v, want ECONNREFUSED", err)
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) || opErr.Op != "dial" {
			t.Errorf("error %v is not a *net.OpError for dial", err)
		}
	})
	t.Run("honours the context", func(t *testing.T) {
		// The host drops SYNs to the gateway, so this connect hangs.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := DialContext(ctx, a.NetnsPath, "tcp", netip.AddrPortFrom(a.Gateway, 9).String())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want context.DeadlineExceeded", err)
		}
		// A dial that ignored ctx would hang for the kernel's SYN retries
		// (over 2 minutes); 20 s is far from both on a loaded host.
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("dial returned after %v", d)
		}
		ctx, cancel = context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err = DialContext(ctx, a.NetnsPath, "tcp", netip.AddrPortFrom(a.Gateway, 9).String())
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		ctx := context.Background()
		for _, tc := range []struct{ netns, network, addr string }{
			{a.NetnsPath, "tcp", "localhost:80"},
			{a.NetnsPath, "udp", "127.0.0.1:80"},
			{a.NetnsPath, "tcp6", "127.0.0.1:80"},
			{m.NetnsPath("nosuchkey"), "tcp", "127.0.0.1:80"},
			{"/dev/null", "tcp", "127.0.0.1:80"}, // not a namespace: setns fails
		} {
			if c, err := DialContext(ctx, tc.netns, tc.network, tc.addr); err == nil {
				c.Close()
				t.Errorf("DialContext(%s, %s, %s) succeeded, want error", tc.netns, tc.network, tc.addr)
			}
		}
	})
}

func TestDoPanicsInCaller(t *testing.T) {
	m := newTestManager(t)
	key := randomKey(t)
	mustCreate(t, m, key, CreateOptions{Mode: ModeNone})
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		m.Do(key, func() error { panic("boom") })
		t.Error("Do returned after fn panicked")
	}()
	if err := m.Do(key, func() error { runtime.Goexit(); return nil }); err == nil {
		t.Error("Do returned nil after fn called runtime.Goexit")
	}
	inner := errors.New("inner")
	if err := m.Do(key, func() error { return inner }); !errors.Is(err, inner) {
		t.Errorf("Do = %v, want fn's error", err)
	}
	// checkThreadsInHostNetns (in cleanup) verifies every thread came back.
}

func TestCreateIdempotent(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	key := randomKey(t)
	opts := CreateOptions{Mode: ModeInternet, Slot: 3, AllowCIDRs: prefixes("192.0.2.0/24")}

	first := mustCreate(t, m, key, opts)
	hostBefore, err := netlink.LinkByName(first.HostInterface)
	if err != nil {
		t.Fatal(err)
	}
	second := mustCreate(t, m, key, opts)
	if diff := cmp.Diff(first, second, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("second Create (-first +second):\n%s", diff)
	}
	hostAfter, err := netlink.LinkByName(first.HostInterface)
	if err != nil {
		t.Fatal(err)
	}
	if hostAfter.Attrs().Index != hostBefore.Attrs().Index {
		t.Errorf("second Create rebuilt the veth (index %d -> %d)", hostBefore.Attrs().Index, hostAfter.Attrs().Index)
	}
	if es := allowSetElements(t, m); len(es) != 1 {
		t.Errorf("allow set = %v, want one element", es)
	}

	t.Run("repairs a half-built link", func(t *testing.T) {
		if err := netlink.AddrDel(hostAfter, addr(first.Gateway)); err != nil {
			t.Fatal(err)
		}
		ep := mustCreate(t, m, key, opts)
		inner := listenIn(t, ep.NetnsPath, "0.0.0.0:0")
		// The gateway is back: the sandbox's default route works again
		// (checked from the host side through the sandbox's own address).
		h, err := netlink.LinkByName(ep.HostInterface)
		if err != nil {
			t.Fatal(err)
		}
		addrs, _ := netlink.AddrList(h, netlink.FAMILY_V4)
		if len(addrs) != 1 || !addrs[0].IP.Equal(first.Gateway.AsSlice()) {
			t.Errorf("host side addresses = %v, want %s", addrs, first.Gateway)
		}
		wantReachable(t, ep, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), inner.Port()))
	})

	t.Run("mounts over a leftover plain file", func(t *testing.T) {
		k := randomKey(t)
		if err := os.WriteFile(m.NetnsPath(k), nil, 0o444); err != nil {
			t.Fatal(err)
		}
		ep := mustCreate(t, m, k, CreateOptions{Mode: ModeNone})
		if ok, err := isNetnsMount(ep.NetnsPath); !ok || err != nil {
			t.Errorf("isNetnsMount = %v, %v; want true", ok, err)
		}
	})

	t.Run("mode and slot changes", func(t *testing.T) {
		k := randomKey(t)
		mustCreate(t, m, k, CreateOptions{Mode: ModeNone})
		ep := mustCreate(t, m, k, CreateOptions{Mode: ModeInternet, Slot: 5})
		if _, err := netlink.LinkByName(ep.HostInterface); err != nil {
			t.Errorf("none -> internet: %v", err)
		}
		ep = mustCreate(t, m, k, CreateOptions{Mode: ModeInternet, Slot: 6, AllowCIDRs: prefixes("192.0.2.1/32")})
		want, _ := LinkForSlot(m.cfg.Subnet, 6)
		h, err := netlink.LinkByName(ep.HostInterface)
		if err != nil {
			t.Fatal(err)
		}
		if addrs, _ := netlink.AddrList(h, netlink.FAMILY_V4); len(addrs) != 1 || !addrs[0].IP.Equal(want.Gateway.AsSlice()) {
			t.Errorf("slot 5 -> 6: host addresses %v, want %s", addrs, want.Gateway)
		}
		mustCreate(t, m, k, CreateOptions{Mode: ModeNone})
		if _, err := netlink.LinkByName(m.cfg.InterfacePrefix + k); !isNotFound(err) {
			t.Errorf("internet -> none: host link still there (err %v)", err)
		}
		var links []string
		m.Do(k, func() error {
			ls, err := netlink.LinkList()
			for _, l := range ls {
				links = append(links, l.Attrs().Name)
			}
			return err
		})
		if diff := cmp.Diff([]string{"lo"}, links); diff != "" {
			t.Errorf("internet -> none: links (-want +got):\n%s", diff)
		}
		// Only the first key's element is left.
		if es := allowSetElements(t, m); len(es) != 1 {
			t.Errorf("allow set = %v, want one element", es)
		}
	})

	t.Run("after a reboot", func(t *testing.T) {
		// A reboot wipes /run and every namespace and veth with it.
		k := randomKey(t)
		ep := mustCreate(t, m, k, CreateOptions{Mode: ModeInternet, Slot: 7})
		if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ep.HostInterface}}); err != nil {
			t.Fatal(err)
		}
		if err := removeNetns(ep.NetnsPath); err != nil {
			t.Fatal(err)
		}
		ep = mustCreate(t, m, k, CreateOptions{Mode: ModeInternet, Slot: 7})
		inner := listenIn(t, ep.NetnsPath, "127.0.0.1:0")
		wantReachable(t, ep, inner)
	})

	if err := m.Destroy(ctx, key); err != nil {
		t.Fatal(err)
	}
}

func TestDestroy(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	key := randomKey(t)
	ep := mustCreate(t, m, key, CreateOptions{Mode: ModeInternet, Slot: 9, AllowCIDRs: prefixes("192.0.2.0/24", "198.51.100.7/32")})
	if es := allowSetElements(t, m); len(es) != 2 {
		t.Fatalf("allow set = %v, want 2 elements", es)
	}
	if keys, _ := m.List(); !cmp.Equal(keys, []string{key}) {
		t.Errorf("List() = %v, want [%s]", keys, key)
	}
	if !mounted(t, ep.NetnsPath) {
		t.Fatalf("%s not mounted after Create", ep.NetnsPath)
	}
	if err := m.Destroy(ctx, key); err != nil {
		t.Fatal(err)
	}
	checkGone(t, m, key)
	if es := allowSetElements(t, m); len(es) != 0 {
		t.Errorf("allow set after Destroy = %v, want empty", es)
	}
	if err := m.Destroy(ctx, key); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if err := m.Destroy(ctx, randomKey(t)); err != nil {
		t.Errorf("Destroy of a key that never existed: %v", err)
	}
	if err := m.Destroy(ctx, "../etc"); err == nil {
		t.Error("Destroy with an invalid key succeeded")
	}
	if keys, _ := m.List(); len(keys) != 0 {
		t.Errorf("List() after Destroy = %v, want none", keys)
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	opts := CreateOptions{Mode: ModeInternet, Slot: 1, AllowCIDRs: prefixes("192.0.2.0/24")}
	injected := errors.New("injected failure")

	for _, step := range []string{"netns", "veth", "link-configured", "allows"} {
		t.Run("after "+step, func(t *testing.T) {
			testHookFail = func(s string) error {
				if s == step {
					return injected
				}
				return nil
			}
			defer func() { testHookFail = nil }()
			key := randomKey(t)
			if _, err := m.Create(ctx, key, opts); !errors.Is(err, injected) {
				t.Fatalf("Create: %v, want the injected error", err)
			}
			checkGone(t, m, key)
			if es := allowSetElements(t, m); len(es) != 0 {
				t.Errorf("allow set = %v, want empty", es)
			}
		})
	}

	t.Run("nft fails", func(t *testing.T) {
		// The table disappears behind the Manager's back.
		if out, err := nftCmd("delete", "table", "inet", m.cfg.Table); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		defer func() {
			if err := m.Setup(ctx); err != nil {
				t.Fatal(err)
			}
		}()
		key := randomKey(t)
		if _, err := m.Create(ctx, key, opts); err == nil {
			t.Fatal("Create succeeded without the table")
		}
		checkGone(t, m, key)
	})

	t.Run("keeps what existed before", func(t *testing.T) {
		key := randomKey(t)
		ep := mustCreate(t, m, key, CreateOptions{Mode: ModeNone})
		testHookFail = func(s string) error {
			if s == "link-configured" {
				return injected
			}
			return nil
		}
		defer func() { testHookFail = nil }()
		if _, err := m.Create(ctx, key, opts); !errors.Is(err, injected) {
			t.Fatalf("Create: %v, want the injected error", err)
		}
		if ok, _ := isNetnsMount(ep.NetnsPath); !ok {
			t.Error("failed Create removed a namespace it did not create")
		}
		if _, err := netlink.LinkByName(m.cfg.InterfacePrefix + key); !isNotFound(err) {
			t.Errorf("failed Create left its veth (err %v)", err)
		}
	})

	t.Run("invalid options", func(t *testing.T) {
		for _, o := range []CreateOptions{
			{Mode: ""},
			{Mode: "bridge"},
			{Mode: ModeNone, AllowCIDRs: prefixes("10.0.0.0/8")},
			{Mode: ModeNone, AllowHostCIDRs: prefixes("10.0.0.0/8")},
			{Mode: ModeInternet, Slot: -1},
			{Mode: ModeInternet, Slot: m.SlotCount()},
			{Mode: ModeInternet, AllowCIDRs: prefixes("fd00::/8")},
		} {
			key := randomKey(t)
			if _, err := m.Create(ctx, key, o); err == nil {
				t.Errorf("Create(%+v) succeeded", o)
			}
			checkGone(t, m, key)
		}
	})

	t.Run("before Setup", func(t *testing.T) {
		m2, err := New(Config{NetnsDir: t.TempDir(), Table: "sandboxd_test_nosetup", InterfacePrefix: "nzz"})
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		if _, err := m2.Create(ctx, randomKey(t), CreateOptions{Mode: ModeInternet}); err == nil {
			t.Error("Create in internet mode before Setup succeeded")
		}
	})
}

func nftCmd(args ...string) ([]byte, error) {
	return exec.Command("nft", args...).CombinedOutput()
}

func TestSetupKeepsAllowSet(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	mustCreate(t, m, randomKey(t), CreateOptions{Mode: ModeInternet, Slot: 1, AllowCIDRs: prefixes("192.0.2.0/24")})
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if es := allowSetElements(t, m); len(es) != 1 {
		t.Errorf("allow set after a second Setup = %v, want one element", es)
	}
	v, err := readSysctl("net/ipv4/ip_forward")
	if err != nil || strings.TrimSpace(v) != "1" {
		t.Errorf("ip_forward = %q, %v; want 1", v, err)
	}
}

func TestConcurrentCreateDestroy(t *testing.T) {
	m := newTestManager(t)
	ctx := context.Background()
	const n = 8
	errc := make(chan error, n)
	for i := range n {
		go func() {
			key := randomKey(t)
			opts := CreateOptions{Mode: ModeInternet, Slot: i}
			if i%2 == 0 {
				opts.AllowCIDRs = prefixes(fmt.Sprintf("192.0.2.%d/32", i))
			}
			for range 3 {
				if _, err := m.Create(ctx, key, opts); err != nil {
					errc <- err
					return
				}
				if err := m.Destroy(ctx, key); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range n {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
	if keys, _ := m.List(); len(keys) != 0 {
		t.Errorf("List() = %v, want none", keys)
	}
	if es := allowSetElements(t, m); len(es) != 0 {
		t.Errorf("allow set = %v, want empty", es)
	}
}

var benchCases = []struct {
	name string
	opts CreateOptions
}{
	{"none", CreateOptions{Mode: ModeNone}},
	{"internet", CreateOptions{Mode: ModeInternet, Slot: 1}},
	{"internet+allow", CreateOptions{Mode: ModeInternet, Slot: 1, AllowCIDRs: prefixes("192.0.2.0/24")}},
}

func BenchmarkCreateDestroy(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			m := newTestManager(b)
			ctx := context.Background()
			key := randomKey(b)
			for b.Loop() {
				if _, err := m.Create(ctx, key, bc.opts); err != nil {
					b.Fatal(err)
				}
				if err := m.Destroy(ctx, key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCreate times Create alone. Destroy in internet mode is dominated
// by the kernel deleting the veth (it waits for RCU grace periods), which
// this leaves out of the timer.
func BenchmarkCreate(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			m := newTestManager(b)
			ctx := context.Background()
			key := randomKey(b)
			for b.Loop() {
				if _, err := m.Create(ctx, key, bc.opts); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := m.Destroy(ctx, key); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDialContext measures a connection to a sandbox's loopback through
// DialContext (the preview proxy's per-connection cost).
func BenchmarkDialContext(b *testing.B) {
	m := newTestManager(b)
	ep := mustCreate(b, m, randomKey(b), CreateOptions{Mode: ModeNone})
	srv := listenIn(b, ep.NetnsPath, "127.0.0.1:0")
	ctx := context.Background()
	for b.Loop() {
		c, err := DialContext(ctx, ep.NetnsPath, "tcp", srv.String())
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
