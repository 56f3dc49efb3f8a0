// Package httpserve makes the http.Servers of listeners anyone may reach
// (the daemon's API and preview listeners, a cluster's gateway) hold no
// more of the process's descriptors and memory than their bounds, whatever
// clients do. It owns only the server's settings; never what it serves.
package httpserve

import (
	"log/slog"
	"net"
	"net/http"
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

// Public sets srv up for a listener the world may reach and returns it:
// bounded headers and time to them (where srv sets none), idle connections
// closed after IdleConnTimeout, and at most ConnLimit() connections open
// (past that, a new one is closed at once; what names the listener in the
// log). Connections are never wrapped: the preview proxy joins a client's
// *net.TCPConn itself (proxy.WithConn).
func Public(srv *http.Server, what string, log *slog.Logger) *http.Server {
	if srv.ReadHeaderTimeout == 0 {
		srv.ReadHeaderTimeout = 10 * time.Second
	}
	if srv.MaxHeaderBytes == 0 {
		srv.MaxHeaderBytes = 64 << 10
	}
	srv.IdleTimeout = IdleConnTimeout
	return guard(srv, what, log, ConnLimit())
}

// guard makes srv close a new connection past max open ones.
func guard(srv *http.Server, what string, log *slog.Logger, max int) *http.Server {
	g := &connGuard{max: max, what: what, log: log}
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

// connGuard counts a server's open connections (ConnState) and closes a
// new one past max. A connection the server hands over (hijacked: a
// WebSocket, a joined preview) leaves its count; those have bounds of
// their own.
type connGuard struct {
	max  int
	what string
	log  *slog.Logger

	mu         sync.Mutex
	open       int
	refused    int
	lastLogged time.Time
}

func (g *connGuard) track(c net.Conn, state http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch state {
	case http.StateNew:
		g.open++
		if g.open > g.max {
			c.Close()
			g.refused++
			g.logRefusals()
		}
	case http.StateHijacked, http.StateClosed:
		g.open--
	}
}

// logRefusals says at most once a minute how many connections were
// closed for the bound.
func (g *connGuard) logRefusals() {
	if now := time.Now(); now.Sub(g.lastLogged) >= time.Minute {
		g.log.Warn("closing new connections: the listener holds its most", "listener", g.what, "open", g.open-1, "max", g.max, "closed", g.refused)
		g.lastLogged, g.refused = now, 0
	}
}
