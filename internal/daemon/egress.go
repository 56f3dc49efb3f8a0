package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/egress"
	"github.com/sandboxd/sandboxd/internal/metrics"
	"github.com/sandboxd/sandboxd/internal/network"
)

// parseUpstreams reads --dns-upstream: IPv4 addresses, optionally with a
// port (53 by default).
func parseUpstreams(ss []string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	for _, s := range ss {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("--dns-upstream %q: want IPv4[:port]", s)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		if !ap.Addr().Unmap().Is4() || ap.Port() == 0 {
			return nil, fmt.Errorf("--dns-upstream %q: want IPv4[:port]", s)
		}
		out = append(out, ap)
	}
	return out, nil
}

// egressService is the daemon's DNS forwarder and name checker, and the
// record of what sandboxes' policies refused.
type egressService struct {
	fwd     *egress.Forwarder
	chk     *egress.Checker
	denials *egress.Denials
	// pol is filled in once the network manager exists: the forwarder's
	// ports go into the manager's ruleset, so they are bound first.
	pol lateNetwork
	wg  sync.WaitGroup
}

// lateNetwork is the network manager as egress.Policies, set after the
// listeners are bound and before they serve.
type lateNetwork struct{ m *network.Manager }

func (l *lateNetwork) PolicyFor(src netip.Addr) (string, network.Egress, bool) {
	return l.m.PolicyFor(src)
}

func (l *lateNetwork) Resolved(ctx context.Context, src netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error {
	return l.m.Resolved(ctx, src, name, addrs, ttl)
}

func (l *lateNetwork) Decide(src, dst netip.Addr, name string) bool {
	return l.m.Decide(src, dst, name)
}

// listenEgress binds the forwarder and the checker; nil when there is no
// upstream server to forward to (sandboxes then have no DNS at all).
func listenEgress(upstreams []netip.AddrPort, log *slog.Logger) (*egressService, error) {
	if len(upstreams) == 0 {
		log.Warn("no DNS server for sandboxes (--dns, --dns-upstream): they resolve no names, and domain policies open nothing")
		return nil, nil
	}
	e := &egressService{denials: egress.NewDenials()}
	var err error
	if e.fwd, err = egress.ListenDNS(&e.pol, upstreams, e.denials, log); err != nil {
		return nil, err
	}
	if e.chk, err = egress.ListenChecker(&e.pol, e.denials, log); err != nil {
		e.fwd.Close()
		return nil, err
	}
	return e, nil
}

// serve starts answering once the network manager is set up.
func (e *egressService) serve(m *network.Manager) {
	e.pol.m = m
	e.wg.Add(2)
	go func() { defer e.wg.Done(); e.fwd.Serve() }()
	go func() { defer e.wg.Done(); e.chk.Serve() }()
}

func (e *egressService) close() {
	e.fwd.Close()
	e.chk.Close()
	e.wg.Wait()
}

// Denied implements httpapi.EgressReporter over the netAdapter's keys.
func (n *netAdapter) Denied(sandboxID string, cached bool) (int64, []api.DeniedName) {
	key, ok := n.keyOf(sandboxID)
	if !ok || n.egress == nil {
		return 0, nil
	}
	count, last := n.egress.denials.Get(key)
	count += int64(n.deniedPackets(cached)[key])
	out := make([]api.DeniedName, len(last))
	for i, d := range last {
		out[i] = api.DeniedName{Name: d.Name, Reason: d.Reason, At: d.At.UTC()}
	}
	return count, out
}

func (n *netAdapter) keyOf(sandboxID string) (string, bool) {
	n.idsMu.Lock()
	defer n.idsMu.Unlock()
	for k, id := range n.ids {
		if id == sandboxID {
			return k, true
		}
	}
	return "", false
}

// packetsTTL is how long a read of the denied packet counters serves:
// reading them runs nft, which costs more than a policy change on a busy
// host, and a summary a second old is as good.
const packetsTTL = 2 * time.Second

// deniedPackets returns the table's denied packet counters by key, read
// at most every packetsTTL; with cached, whatever was read last.
func (n *netAdapter) deniedPackets(cached bool) map[string]uint64 {
	n.pktMu.Lock()
	defer n.pktMu.Unlock()
	if cached || time.Since(n.pktAt) < packetsTTL {
		return n.pkts
	}
	pkts, err := n.m.DeniedPackets(context.Background())
	if err != nil {
		n.log.Warn("reading denied packet counters", "err", err)
		return n.pkts
	}
	n.pkts, n.pktAt = pkts, time.Now()
	return pkts
}

// registerEgressMetrics exports sandboxd_egress_denied_total by sandbox.
func registerEgressMetrics(r *metrics.Registry, n *netAdapter) {
	r.NewCounterFunc("sandboxd_egress_denied_total", "Egress a sandbox's policy refused: lookups answered NXDOMAIN, connections refused by name, packets of new connections dropped.", "sandbox", func() map[string]float64 {
		out := map[string]float64{}
		if n.egress == nil {
			return out
		}
		pkts := n.deniedPackets(false)
		counts := n.egress.denials.Counts()
		n.idsMu.Lock()
		defer n.idsMu.Unlock()
		for k, id := range n.ids {
			if c := float64(counts[k]) + float64(pkts[k]); c > 0 {
				out[id] = c
			}
		}
		return out
	})
}
