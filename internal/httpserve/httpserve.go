// Package httpserve makes the http.Servers of listeners anyone may reach
// (the daemon's API and preview listeners, a cluster's gateway) hold no
// more of the process's descriptors and memory than their bounds, whatever
// clients do: the server's settings, and (ReadBody) the bounded read of a
// body a handler takes whole. Never what the servers serve.
package httpserve

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// IdleConnTimeout is how long a public listener keeps a connection that
// waits for its next request. Go's server keeps one for ever without it: anyone who can reach a listener, without a token,
// could send one request per connection and hold thousands (2,000 held
// 2,000 of the daemon's descriptors and 38 MB for as long as the client
// wished). Two minutes is well past the keep-alive of browsers and of the
// SDKs' clients (seconds to 90 s), so they close first.
const IdleConnTimeout = 2 * time.Minute

// maxListenerConns bounds the connections one listener keeps open, so
// that the process keeps descriptors for its own work (the daemon's
// sandboxes, their agents and its files) whatever clients do: a quarter of
// RLIMIT_NOFILE each (the daemon has two such listeners), at most this
// many (about 19 KB of memory each while idle).
const maxListenerConns = 16384

// DefaultMaxPerSource is how many connections one source address (an
// IPv6 source: its /64) may hold open on one listener by default. Past it,
// anyone re-sending a request more often than IdleConnTimeout could keep a
// listener at its bound from one machine, and new clients would be closed.
// It is far above what one client keeps: a browser holds at most 6 per
// host name and 256 in all (Chrome), the Python SDK one per call in
// flight, the Go and TypeScript SDKs one per call in flight plus a few
// idle (bench/results/conns-per-source.txt counts them).
const DefaultMaxPerSource = 512

// PerSource bounds what one source address may hold open on a listener.
type PerSource struct {
	// Max is the most connections one source keeps open; 0: no bound
	// but the listener's.
	Max int
	// Exempt are sources counted only against the listener's bound: a
	// reverse proxy in front, which forwards many users' calls from one
	// address (see ParseExempt).
	Exempt []netip.Prefix
}

// Loopback is the exemption named "loopback": this host itself, such as a
// reverse proxy on it.
var Loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// ParseExempt parses a comma-separated list of IP addresses, CIDRs and
// the word "loopback" (Loopback); "" is none.
func ParseExempt(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		switch s = strings.TrimSpace(s); {
		case s == "":
		case s == "loopback":
			out = append(out, Loopback...)
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%q: want an IP address, a CIDR or loopback", s)
			}
			out = append(out, p.Masked())
		default:
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q: want an IP address, a CIDR or loopback", s)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

// Public sets srv up for a listener the world may reach and returns it:
// bounded headers and time to them (where srv sets none), idle connections
// closed after IdleConnTimeout, and at most ConnLimit() connections open,
// at most per.Max of them from one source (past either, a new connection is
// closed at once; what names the listener in the log). Connections are
// never wrapped: the preview proxy joins a client's *net.TCPConn itself
// (proxy.WithConn).
func Public(srv *http.Server, what string, log *slog.Logger, per PerSource) *http.Server {
	if srv.ReadHeaderTimeout == 0 {
		srv.ReadHeaderTimeout = 10 * time.Second
	}
	if srv.MaxHeaderBytes == 0 {
		srv.MaxHeaderBytes = 64 << 10
	}
	srv.IdleTimeout = IdleConnTimeout
	return guard(srv, what, log, ConnLimit(), per)
}

// guard makes srv close a new connection past max open ones, or past
// per.Max open ones from its source.
func guard(srv *http.Server, what string, log *slog.Logger, max int, per PerSource) *http.Server {
	g := &connGuard{max: max, per: per, what: what, log: log, bySource: map[netip.Prefix]int{}}
	srv.ConnState = g.track
	return srv
}

// ConnLimit is the number of connections one listener keeps open.
func ConnLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur/4 < 64 {
		return 64
	}
	return int(min(rl.Cur/4, maxListenerConns))
}

// connGuard counts a server's open connections (ConnState), in all and
// by source, and closes a new one past max, or past per.Max from its
// source. A connection the server hands over (hijacked: a WebSocket, a
// joined preview) leaves its counts; those have bounds of their own.
type connGuard struct {
	max  int
	per  PerSource
	what string
	log  *slog.Logger

	mu   sync.Mutex
	open int
	// bySource counts the open connections of each counted source; a
	// source leaves it with its last connection.
	bySource   map[netip.Prefix]int
	refused    int
	lastLogged time.Time
	// bySourceRefused counts the connections closed for their source's
	// bound since lastSourceLog.
	bySourceRefused int
	lastSourceLog   time.Time
}

func (g *connGuard) track(c net.Conn, state http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch state {
	case http.StateNew:
		g.open++
		src, counted := g.source(c)
		if counted {
			g.bySource[src]++
		}
		switch {
		case g.open > g.max:
			c.Close()
			g.refused++
			g.logRefusals()
		case counted && g.bySource[src] > g.per.Max:
			c.Close()
			g.bySourceRefused++
			g.logSourceRefusals(src)
		}
	case http.StateHijacked, http.StateClosed:
		g.open--
		if src, counted := g.source(c); counted {
			if g.bySource[src]--; g.bySource[src] <= 0 {
				delete(g.bySource, src)
			}
		}
	}
}

// source is the source c is counted under (an IPv4 address, an IPv6
// address's /64: one host or one customer's network alike), and whether
// it is counted at all: not without a per-source bound, not for exempt
// sources, not for connections without an IP address (the daemon's
// in-memory listener).
func (g *connGuard) source(c net.Conn) (netip.Prefix, bool) {
	if g.per.Max <= 0 {
		return netip.Prefix{}, false
	}
	tcp, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	a := tcp.AddrPort().Addr().Unmap()
	for _, p := range g.per.Exempt {
		if p.Contains(a) {
			return netip.Prefix{}, false
		}
	}
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	return p, err == nil
}

// logRefusals says at most once a minute how many connections were
// closed for the bound.
func (g *connGuard) logRefusals() {
	if now := time.Now(); now.Sub(g.lastLogged) >= time.Minute {
		g.log.Warn("closing new connections: the listener holds its most", "listener", g.what, "open", g.open-1, "max", g.max, "closed", g.refused)
		g.lastLogged, g.refused = now, 0
	}
}

// logSourceRefusals says at most once a minute how many connections were
// closed for their source's bound, naming the latest source.
func (g *connGuard) logSourceRefusals(src netip.Prefix) {
	if now := time.Now(); now.Sub(g.lastSourceLog) >= time.Minute {
		g.log.Warn("closing new connections: a source holds its most (a reverse proxy in front needs --conns-per-source-exempt)",
			"listener", g.what, "source", src.String(), "open", g.bySource[src]-1, "max_per_source", g.per.Max, "closed", g.bySourceRefused)
		g.lastSourceLog, g.bySourceRefused = now, 0
	}
}
