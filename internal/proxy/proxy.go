package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex"
	"github.com/sandboxd/sandboxd/internal/copybuf"
	"github.com/sandboxd/sandboxd/internal/httpconn"
	"github.com/sandboxd/sandboxd/internal/sockjoin"
)

// DialFunc connects to port inside sandbox id. Errors about the sandbox
// itself (gone, failed to start) should be the sandbox package's, so that
// the caller can tell them from a service that does not answer.
type DialFunc func(ctx context.Context, id string, port int) (net.Conn, error)

// Options configure a Proxy.
type Options struct {
	Dial DialFunc
	Log  *slog.Logger
	// IdleConnTimeout bounds how long an idle keep-alive connection to a
	// sandbox's service is kept for the next request; default 60s.
	IdleConnTimeout time.Duration
	Limits          Limits
	// JoinConnections lets the proxy join a client's connection to the
	// service's in the kernel after its first request (join.go), for
	// requests that allow it (Request.Hold). When the kernel does not
	// allow it, the proxy logs why and serves every request itself.
	JoinConnections bool
}

// Limits bound what a service in a sandbox, and the anonymous clients of
// its preview URL, can make the daemon hold. Zero fields take the
// defaults.
type Limits struct {
	// MaxHeaderBytes bounds a service's response headers (default 64 KiB;
	// Go's own default is 10 MiB, held in memory per request).
	MaxHeaderBytes int64
	// HeaderTimeout bounds the time from the end of the request to the
	// service's response headers (default 60s). Bodies, event streams and
	// WebSockets are not bounded by it once their headers came.
	HeaderTimeout time.Duration
	// MaxInFlightPerSandbox and MaxInFlight bound the requests being
	// served, WebSockets included, per sandbox (default 512) and in all
	// (default 2048): with 64 KiB of headers each, at most 128 MiB. More get ErrBusy.
	MaxInFlightPerSandbox, MaxInFlight int
	// UnreadBodyWait bounds how long, after the answer, the proxy waits for
	// the rest of a body the service left unread (default 10s,
	// fullduplex.DefaultEndBodyWait), holding the request's in-flight slot
	// and the sandbox: a client slower than that has its connection closed.
	UnreadBodyWait time.Duration
}

// Default limits.
const (
	DefaultMaxHeaderBytes        = 64 << 10
	DefaultHeaderTimeout         = 60 * time.Second
	DefaultMaxInFlightPerSandbox = 512
	DefaultMaxInFlight           = 2048
)

func (l Limits) withDefaults() Limits {
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.HeaderTimeout <= 0 {
		l.HeaderTimeout = DefaultHeaderTimeout
	}
	if l.MaxInFlightPerSandbox <= 0 {
		l.MaxInFlightPerSandbox = DefaultMaxInFlightPerSandbox
	}
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	if l.UnreadBodyWait <= 0 {
		l.UnreadBodyWait = fullduplex.DefaultEndBodyWait
	}
	return l
}

// ErrBusy: the sandbox, or the proxy as a whole, is serving as many
// requests as its limits allow.
var ErrBusy = errors.New("too many requests in flight")

// DialError is an error of the dial to the service: nothing accepted the
// connection (or the sandbox is gone), so no request reached it.
type DialError struct{ Err error }

func (e *DialError) Error() string { return e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// Proxy forwards HTTP requests to services in sandboxes: every method,
// bodies streamed both ways without a size limit, event streams and other
// responses of unknown length flushed as they come, WebSocket and other
// upgrades, and redirects passed back (never followed). Connections to a
// service are kept alive and reused.
type Proxy struct {
	dial      DialFunc
	pool      *httpconn.Pool
	transport *http.Transport
	limits    Limits
	inFlight  *inFlight
	joins     *joins // nil: no joined connections
	log       *slog.Logger
	errorLog  *log.Logger
}

// New returns a Proxy.
func New(o Options) *Proxy {
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	dial := o.Dial
	limits := o.Limits.withDefaults()
	p := &Proxy{
		dial:     dial,
		pool:     httpconn.NewPool(o.IdleConnTimeout, 1024, 256),
		limits:   limits,
		inFlight: newInFlight(limits.MaxInFlightPerSandbox, limits.MaxInFlight),
		log:      o.Log,
		errorLog: slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
		transport: &http.Transport{
			// The transport's address is "<sandbox ID>:<port>" (see
			// upstreamHost): idle connections are pooled per sandbox port.
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				id, portText, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				port, ok := api.ParsePort(portText)
				if !ok {
					return nil, fmt.Errorf("bad upstream address %q", addr)
				}
				conn, err := dial(ctx, id, port)
				if err != nil {
					return nil, &DialError{Err: err}
				}
				return conn, nil
			},
			MaxIdleConns:           1024,
			MaxIdleConnsPerHost:    256,
			IdleConnTimeout:        o.IdleConnTimeout,
			DisableCompression:     true,
			ExpectContinueTimeout:  time.Second,
			MaxResponseHeaderBytes: limits.MaxHeaderBytes,
			ResponseHeaderTimeout:  limits.HeaderTimeout,
		},
	}
	if o.JoinConnections {
		j, err := sockjoin.New(limits.MaxInFlight)
		if err != nil {
			o.Log.Warn("preview connections cannot be joined in the kernel; the proxy serves every request itself", "err", err)
		} else {
			if p.joins, err = newJoins(j, o.IdleConnTimeout, limits, o.Log); err != nil {
				j.Close()
				o.Log.Warn("preview connections cannot be joined in the kernel; the proxy serves every request itself", "err", err)
			}
		}
	}
	return p
}

// Joining reports whether the proxy joins connections in the kernel.
func (p *Proxy) Joining() bool { return p.joins != nil }

// DropJoined closes the joined connections to port of sandbox id (port 0:
// to any of its ports): its preview address changed or went away.
func (p *Proxy) DropJoined(id string, port int) {
	if p.joins != nil {
		p.joins.drop(id, port)
	}
}

// Limits returns the proxy's limits, defaults filled in.
func (p *Proxy) Limits() Limits { return p.limits }

// Admit takes one of the in-flight slots of sandbox id for a request, or
// returns ErrBusy. Call it before anything else is spent on the request
// (waking the sandbox included); release the slot when the request is
// done.
func (p *Proxy) Admit(id string) (release func(), err error) {
	if !p.inFlight.acquire(id) {
		return nil, ErrBusy
	}
	var once sync.Once
	return func() { once.Do(func() { p.inFlight.release(id) }) }, nil
}

// Close drops the idle connections to services.
func (p *Proxy) Close() {
	p.transport.CloseIdleConnections()
	p.pool.Close()
	if p.joins != nil {
		p.joins.close()
	}
}

func upstreamHost(id string, port int) string { return id + ":" + strconv.Itoa(port) }

// Request says where a request goes and what the service sees of it.
type Request struct {
	SandboxID string
	Port      int
	// Path, when set, replaces the request's path (the API's proxy routes
	// carry the service's path after their own prefix).
	Path string
	// Host is the Host header the service gets.
	Host string
	// Scheme is what X-Forwarded-Proto says: the scheme of the URL the
	// client used.
	Scheme string
	// TrustForwarded keeps the X-Forwarded-* headers of the request, for
	// callers that authenticated it (a front-end server of the user's);
	// otherwise they are replaced.
	TrustForwarded bool
	// StripAuthorization removes the Authorization header: it carried the
	// API token, which never reaches a sandbox.
	StripAuthorization bool
	// Hold, when set, allows the proxy to join the client's connection to
	// the service's after this request (Options.JoinConnections): the
	// connection's later requests then reach the same sandbox port
	// unread. It takes what keeps the sandbox up while the connection is
	// joined; release lets it go.
	Hold func() (release func(), err error)
	// Recheck, with Hold, checks a later request of a joined connection
	// that the kernel kept for the daemon (divert.go): it returns what
	// the ordinary path would make of r, and false when r may not go to
	// the same sandbox port (another preview, a signed link to answer).
	Recheck func(r *http.Request) (Request, bool)
}

// Serve forwards r as req says. When the service cannot be reached or
// breaks the connection before answering, onError is called to answer
// (unless the client is gone).
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, req Request, onError func(http.ResponseWriter, *http.Request, error)) {
	if directEligible(r) {
		p.serveDirect(w, r, req, onError)
		return
	}
	// A service may answer before it has read the whole body (an echo
	// server streaming back what it gets); without full duplex the server
	// would drop the rest of the body when the answer starts.
	fullduplex.Enable(w)
	rp := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { p.rewrite(pr, req) },
		Transport:  p.transport,
		BufferPool: copybuf.Default,
		ErrorLog:   p.errorLog,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away, or half-closed its side: no
				// answer at all, rather than the implicit empty "200 OK"
				// of a handler that writes nothing.
				panic(http.ErrAbortHandler)
			}
			onError(w, r, err)
		},
	}
	rp.ServeHTTP(w, r)
	// A service that could not be reached, or answered first, left the
	// body unread.
	fullduplex.EndBodyWithin(w, r, p.limits.UnreadBodyWait)
}

// rewrite makes the request the service gets: its address, path and Host,
// the X-Forwarded-* headers, and no API token or preview cookie.
func (p *Proxy) rewrite(pr *httputil.ProxyRequest, req Request) {
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = upstreamHost(req.SandboxID, req.Port)
	if req.Path != "" {
		pr.Out.URL.Path = req.Path
		pr.Out.URL.RawPath = ""
	}
	pr.Out.Host = req.Host
	if req.TrustForwarded {
		for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
			if v := pr.In.Header.Values(h); len(v) > 0 {
				pr.Out.Header[h] = v
			}
		}
	}
	host, proto := pr.Out.Header.Get("X-Forwarded-Host"), pr.Out.Header.Get("X-Forwarded-Proto")
	pr.SetXForwarded() // appends the client's address to X-Forwarded-For
	if host != "" {
		pr.Out.Header.Set("X-Forwarded-Host", host)
	}
	switch {
	case proto != "":
		pr.Out.Header.Set("X-Forwarded-Proto", proto)
	case req.Scheme != "":
		pr.Out.Header.Set("X-Forwarded-Proto", req.Scheme)
	}
	if req.StripAuthorization {
		pr.Out.Header.Del("Authorization")
	}
	stripCookie(pr.Out.Header, CookieName)
}

// stripCookie removes every cookie called name from the Cookie headers of
// h, keeping the others as they were.
func stripCookie(h http.Header, name string) {
	values := h.Values("Cookie")
	if len(values) == 0 {
		return
	}
	var kept []string
	for _, line := range values {
		var parts []string
		for _, c := range strings.Split(line, ";") {
			n, _, _ := strings.Cut(strings.TrimSpace(c), "=")
			if n != name {
				parts = append(parts, strings.TrimSpace(c))
			}
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	h.Del("Cookie")
	for _, v := range kept {
		h.Add("Cookie", v)
	}
}
