package daemon

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/proxy"
)

// idleConnTimeout is how long the API and preview listeners keep a
// connection that waits for its next request. Go's server keeps one for
// ever without it: anyone who can reach a listener, without a token,
// could send one request per connection and hold thousands (2,000 held
// 2,000 of the daemon's descriptors and 38 MB for as long as the client
// wished). Two minutes is well past the keep-alive of browsers and of the
// SDKs' clients (seconds to 90 s), so they close first.
const idleConnTimeout = 2 * time.Minute

// maxListenerConns bounds the connections one listener keeps open, so
// that the daemon keeps descriptors for its sandboxes, their agents and
// its files whatever clients do: a quarter of RLIMIT_NOFILE each (the API
// and the preview listener), at most this many (about 19 KB of memory
// each while idle).
const maxListenerConns = 16384

// newServer is the http.Server of a listener the world may reach: bounded
// headers and time to them, idle connections closed, and at most
// connLimit() connections open (past that, a new one is closed at once).
// Connections are never wrapped: the preview proxy joins a client's
// *net.TCPConn itself (proxy.WithConn).
func newServer(handler http.Handler, what string, log *slog.Logger) *http.Server {
	guard := &connGuard{max: connLimit(), what: what, log: log}
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idleConnTimeout,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       proxy.WithConn,
		ConnState:         guard.track,
	}
}

// connLimit is the number of connections one listener keeps open.
func connLimit() int {
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
