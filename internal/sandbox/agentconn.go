package sandbox

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandboxd/sandboxd/internal/httpconn"
)

// agentConns is the daemon's one HTTP transport to every sandbox's agent.
//
// Why one: an http.Transport of its own per sandbox kept about 3 KB of
// maps (its idle connections, their waiters and LRU), allocated by the
// first call and kept after the connections closed, for every running
// sandbox: half of the daemon's live heap with 2,000 idle ones, and so
// half of every garbage collection's cycle, which the calls then fault
// in page by page (bench/results/scale.txt). The shared transport pools
// connections by URL host; each instance gets a host of its own (an
// agentLink), which the dialer maps to that instance's socket. So a
// connection to one agent never carries another's call, a new instance
// (a restart on the same socket path) never reuses the old one's
// connections, and the per-host limits are the per-sandbox limits each
// transport had.
type agentConns struct {
	transport *http.Transport
	// direct holds the idle connections of the calls sent whole
	// (agentDirect), by link host.
	direct *httpconn.Pool
	// sockets maps a live link's host to its agent's socket.
	sockets sync.Map
	serial  atomic.Uint64
}

// agentIdleConnTimeout is how long an idle connection to an agent is
// kept. Each holds buffers and two goroutines in the daemon, and a
// goroutine and buffers in the agent, charged to its sandbox. With Go's
// default of 90 s the connections of a burst of creates outlived it by a
// minute and a half: 40 s after 200 creates, 86 connections against 2 at
// 30 s, 394 goroutines against 226, 9.8 MB of heap in use against 7.3
// (bench/results/scale.txt). 30 s still covers the pauses between one
// user's calls; a redial costs a unix socket's connect and accept.
const agentIdleConnTimeout = 30 * time.Second

// agentMaxIdleConnsPerLink is how many idle connections to one agent
// each way of calling it keeps: the 64 its own transport had.
const agentMaxIdleConnsPerLink = 64

// maxAgentHeaderBytes bounds the response headers of an agent call.
const maxAgentHeaderBytes = 64 << 10

// errAgentGone is a dial to the host of a link that was closed or
// renewed: its instance's agent is no longer to be reached through it.
var errAgentGone = errors.New("the sandbox's agent is gone")

func newAgentConns() *agentConns {
	c := &agentConns{direct: httpconn.NewPool(agentIdleConnTimeout, 0, agentMaxIdleConnsPerLink)}
	c.transport = &http.Transport{
		DialContext: c.dial,
		// No limit over all agents: each sandbox's own, per host, is the
		// 64 its transport had.
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: agentMaxIdleConnsPerLink,
		IdleConnTimeout:     agentIdleConnTimeout,
		DisableCompression:  true,
		// The agent's headers are small; whatever answers on its socket
		// must not make the daemon hold Go's default 10 MiB per call.
		// (Time to headers is the caller's: a buffered exec answers
		// when its command ends, up to 24 h later; the daemon's own calls
		// carry deadlines.)
		MaxResponseHeaderBytes: maxAgentHeaderBytes,
	}
	return c
}

// dial connects to the socket of the link whose host addr names. A host
// no live link has fails as a dial error (a *net.OpError of Op "dial"),
// which callers treat as an agent that could not be reached.
func (c *agentConns) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	socket, ok := c.sockets.Load(host)
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: "unix", Err: errAgentGone}
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", socket.(string))
}

// link returns a new instance's way to the agent listening on socket.
func (c *agentConns) link(socket string) *agentLink {
	l := &agentLink{conns: c, socket: socket}
	l.renew()
	return l
}

// close lets go of every idle connection, at the daemon's shutdown.
func (c *agentConns) close() {
	c.transport.CloseIdleConnections()
	c.direct.Close()
}

// agentLink is one instance's way to its agent: an http.RoundTripper over
// the shared transport that sends every call to the link's own host.
type agentLink struct {
	conns  *agentConns
	socket string
	host   atomic.Pointer[string]
}

// renew gives the link a new host, so that no connection made before is
// used again (they close when the agent closes them, or after the idle
// timeout): what CloseIdleConnections did on a transport of one's own.
func (l *agentLink) renew() {
	host := l.conns.newHost()
	l.conns.sockets.Store(host, l.socket)
	l.swapHost(host)
}

// close makes every later call through the link fail as a dial error:
// its new host has no socket, and no connection made before is used.
func (l *agentLink) close() { l.swapHost(l.conns.newHost()) }

func (l *agentLink) swapHost(host string) {
	if old := l.host.Swap(&host); old != nil {
		l.conns.sockets.Delete(*old)
		l.conns.direct.Drop(*old)
	}
}

func (c *agentConns) newHost() string {
	return "agent-" + strconv.FormatUint(c.serial.Add(1), 36)
}

// Host is the URL host that reaches the link's agent. A request that
// already carries it is sent as it is; any other is sent on a copy that
// does.
func (l *agentLink) Host() string { return *l.host.Load() }

// RoundTrip sends req to the link's agent. The Host header stays what
// the caller set (the agent is called by the host "agent").
func (l *agentLink) RoundTrip(req *http.Request) (*http.Response, error) {
	host := l.Host()
	if req.URL.Host != host {
		out := *req
		u := *req.URL
		u.Host = host
		out.URL = &u
		if out.Host == "" {
			out.Host = req.URL.Host
		}
		req = &out
	}
	if agentDirect(req) {
		return l.conns.roundTripDirect(req, host)
	}
	return l.conns.transport.RoundTrip(req)
}

// dial connects to the agent's socket, for a connection that is no HTTP
// call's (agentapi.Dial takes it over).
func (l *agentLink) dial(ctx context.Context) (net.Conn, error) {
	return l.conns.dial(ctx, "unix", l.Host())
}
