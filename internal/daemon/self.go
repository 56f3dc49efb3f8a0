package daemon

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/client/mcpserver"
	"github.com/sandboxd/sandboxd/internal/e2b"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// selfURL is the base URL of the daemon's own API as its MCP tools see
// it; ".invalid" can never be a real host, nor a preview host.
const selfURL = "http://sandboxd.invalid"

// newMCP returns the handler of /mcp: the MCP tools of package mcpserver
// over a Go SDK client of this very daemon. The client's connections are
// in-memory pipes served by the API's own http.Server (see selfListener),
// so an MCP call takes exactly the path of an HTTP API call (token check,
// routing, leases, forwarding to the agent) without a socket, and works
// whatever --listen is (any address, behind TLS or a proxy).
func newMCP(self *selfListener, token, version string, log *slog.Logger) (http.Handler, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext:         self.DialContext,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}}
	c, err := client.New(selfURL, client.WithToken(token), client.WithHTTPClient(hc), client.WithUserAgent("sandboxd-mcp/"+version))
	if err != nil {
		return nil, err
	}
	log = log.With("component", "mcp")
	return mcpserver.HTTPHandler(mcpserver.New(c, mcpserver.Options{Version: version, Log: log}), log), nil
}

// newE2B returns the E2B compatibility layer (docs/e2b.md): E2B's
// control plane and envd under /e2b, over the daemon's own API reached
// through self, like the MCP tools. Its domain, the create answer's, is
// where its host names resolve: the preview domain and port.
func newE2B(self *selfListener, token string, keys *tenant.Keys, cfg Config, log *slog.Logger) (*e2b.Server, error) {
	domain := cfg.PreviewDomain
	if p := cfg.PreviewPort; p != 0 && !(cfg.PreviewScheme == "http" && p == 80) && !(cfg.PreviewScheme == "https" && p == 443) {
		domain += ":" + strconv.Itoa(p)
	}
	return e2b.New(e2b.Options{
		Transport: &http.Transport{DialContext: self.DialContext, MaxIdleConnsPerHost: 64, DisableCompression: true},
		BaseURL:   selfURL, Token: token, Keys: keys, StateDir: filepath.Join(cfg.StateDir, "e2b"),
		Domain: domain, PreviewDomain: cfg.PreviewDomain, Log: log, BodyTimeout: cfg.BodyTimeout,
	})
}

// selfListener is a net.Listener in memory: DialContext hands one end of
// a net.Pipe to Accept. The API server serves it beside its TCP listener,
// and shuts it down with it.
type selfListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func newSelfListener() *selfListener {
	return &selfListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// DialContext connects to the listener; it waits for Accept (the API
// server accepts in a loop) or fails once the listener is closed.
func (l *selfListener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	server, c := net.Pipe()
	select {
	case l.conns <- server:
		return c, nil
	case <-l.done:
	case <-ctx.Done():
	}
	server.Close()
	c.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return nil, net.ErrClosed
}

func (l *selfListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *selfListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *selfListener) Addr() net.Addr { return selfAddr{} }

type selfAddr struct{}

func (selfAddr) Network() string { return "pipe" }
func (selfAddr) String() string  { return "sandboxd-self" }
