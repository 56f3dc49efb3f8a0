package bucket

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/atomicfile"
)

// EgressProxy is how a tenant's s3fs reaches its endpoint: an HTTP proxy
// on the host's loopback that resolves the endpoint's name itself at every
// connection and dials only addresses the guard allows. The guard's check
// at mount time alone is not enough: s3fs resolves the name again, later
// and again at every reconnection, and a name whose answer changes in
// between (DNS rebinding) would make the host's s3fs open what only the
// host reaches, such as a cloud's metadata service, and hand the answers
// to the sandbox as files.
//
// s3fs (through libcurl) finds the proxy in its environment. TLS stays end
// to end: an https endpoint is tunnelled with CONNECT, so s3fs still checks
// the endpoint's certificate against its name. Only holders of the proxy's
// secret may use it; it is in s3fs's environment, which only root on the
// host reads.
//
// s3fs outlives the daemon, so the proxy's port and secret are kept in a
// file of the state directory and a restarted daemon listens there again;
// while the daemon is down, a tenant's s3fs cannot connect (its requests
// fail and are retried).
type EgressProxy struct {
	guard EndpointGuard
	log   *slog.Logger
	ln    net.Listener
	srv   *http.Server
	conf  proxyConf
	auth  string // the Proxy-Authorization header s3fs sends
	relay *httputil.ReverseProxy
	// tunnels holds a place per open tunnel, up to maxTunnels.
	tunnels chan struct{}
	tunnel  sync.WaitGroup
	mu      sync.Mutex
	open    map[net.Conn]struct{} // both ends of every tunnel, cut by Close
	closed  bool
	dials   func(result string)
}

// proxyConf is what a restarted daemon needs to serve running s3fs
// processes again.
type proxyConf struct {
	Port   int    `json:"port"`
	Secret string `json:"secret"`
}

// proxyUser is the user name s3fs presents with the secret.
const proxyUser = "sandboxd"

const (
	// dialTimeout bounds a connection to an endpoint, as s3fs's own
	// connect_timeout does.
	dialTimeout = 10 * time.Second
	// maxTunnels bounds the host's open tunnels, all mounts together
	// (s3fs opens a few per mount).
	maxTunnels = 1024
	// tunnelLinger is how long a tunnel's other direction may go on once
	// one direction ended.
	tunnelLinger = 10 * time.Second
)

// StartEgressProxy listens on the loopback port saved in confPath (a new
// one, saved there, if there is none or it is taken) and serves until
// Close. dials, if not nil, counts connections by result: "allowed",
// "refused" (the guard said no) or "failed" (the endpoint did not answer).
func StartEgressProxy(confPath string, guard EndpointGuard, dials func(result string), log *slog.Logger) (*EgressProxy, error) {
	conf, err := loadProxyConf(confPath)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(conf.Port)))
	if err != nil && conf.Port != 0 {
		log.Warn("the bucket egress proxy's port is taken; tenants' bucket mounts made before this start fail until they are mounted again",
			"port", conf.Port, "err", err)
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return nil, fmt.Errorf("bucket egress proxy: %w", err)
	}
	if port := ln.Addr().(*net.TCPAddr).Port; port != conf.Port {
		conf.Port = port
		data, _ := json.Marshal(conf)
		if err := atomicfile.Write(confPath, data, 0o600); err != nil {
			ln.Close()
			return nil, err
		}
	}
	if dials == nil {
		dials = func(string) {}
	}
	p := &EgressProxy{guard: guard, log: log, ln: ln, conf: conf, dials: dials,
		tunnels: make(chan struct{}, maxTunnels), open: map[net.Conn]struct{}{},
		auth: "Basic " + base64.StdEncoding.EncodeToString([]byte(proxyUser+":"+conf.Secret))}
	p.relay = &httputil.ReverseProxy{
		// The request is already in proxy form (an absolute URL): it goes
		// on as it came, without the proxy's own headers, which the
		// relay removes as hop-by-hop.
		Rewrite:   func(*httputil.ProxyRequest) {},
		Transport: &http.Transport{DialContext: p.Dial, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second},
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.refuse(w, err)
		},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go p.srv.Serve(ln)
	return p, nil
}

func loadProxyConf(path string) (proxyConf, error) {
	var conf proxyConf
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if json.Unmarshal(data, &conf) == nil && len(conf.Secret) == 64 {
			return conf, nil
		}
	case !errors.Is(err, os.ErrNotExist):
		return conf, err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	return proxyConf{Secret: hex.EncodeToString(secret)}, nil
}

// Env is what s3fs's environment needs to use the proxy for http and
// https endpoints alike.
func (p *EgressProxy) Env() []string {
	u := fmt.Sprintf("http://%s:%s@127.0.0.1:%d", proxyUser, p.conf.Secret, p.conf.Port)
	return []string{"http_proxy=" + u, "https_proxy=" + u, "HTTPS_PROXY=" + u}
}

// Close stops the proxy; tunnels in flight are cut.
func (p *EgressProxy) Close() error {
	err := p.srv.Close()
	// The server closes only the listeners Serve has begun with: a Close
	// right after the start, before Serve's goroutine ran, left the port
	// bound until it did, and a proxy started again at once found its
	// port taken.
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.tunnel.Wait()
	return err
}

// track adds a tunnel's ends to those Close cuts; false: the proxy is
// closed.
func (p *EgressProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range conns {
		p.open[c] = struct{}{}
	}
	p.tunnel.Add(1)
	return true
}

func (p *EgressProxy) untrack(conns ...net.Conn) {
	p.mu.Lock()
	for _, c := range conns {
		delete(p.open, c)
	}
	p.mu.Unlock()
	p.tunnel.Done()
}

func (p *EgressProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Proxy-Authorization")), []byte(p.auth)) != 1 {
		w.Header().Set("Proxy-Authenticate", `Basic realm="sandboxd"`)
		http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
		return
	}
	switch {
	case r.Method == http.MethodConnect:
		p.connect(w, r)
	case r.URL.IsAbs() && r.URL.Scheme == "http":
		p.relay.ServeHTTP(w, r)
	default:
		http.Error(w, "this proxy relays http:// requests and CONNECT tunnels only", http.StatusBadRequest)
	}
}

// connect opens a tunnel to r.Host, an https endpoint.
func (p *EgressProxy) connect(w http.ResponseWriter, r *http.Request) {
	select {
	case p.tunnels <- struct{}{}:
	default:
		http.Error(w, "too many tunnels open", http.StatusServiceUnavailable)
		return
	}
	up, err := p.Dial(r.Context(), "tcp", r.Host)
	if err != nil {
		<-p.tunnels
		p.refuse(w, err)
		return
	}
	down, buf, err := http.NewResponseController(w).Hijack()
	if err == nil {
		_, err = down.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	}
	if err != nil || !p.track(down, up) {
		<-p.tunnels
		up.Close()
		if down != nil {
			down.Close()
		}
		return
	}
	go func() {
		defer func() { <-p.tunnels }()
		defer p.untrack(down, up)
		splice(down, up, buf.Reader)
	}()
}

// splice copies both ways, passing an end of stream on; pending holds
// bytes the client sent after its CONNECT. Once one direction ended, the
// other has tunnelLinger to finish: an endpoint that never closes cannot
// hold a tunnel after s3fs gave up on it.
func splice(down, up net.Conn, pending io.Reader) {
	defer down.Close()
	defer up.Close()
	linger := func() {
		deadline := time.Now().Add(tunnelLinger)
		down.SetDeadline(deadline)
		up.SetDeadline(deadline)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(up, io.MultiReader(pending, down))
		closeWrite(up)
		linger()
	}()
	io.Copy(down, up)
	closeWrite(down)
	linger()
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// dial resolves hostport's name now and connects to it only if the guard
// allows every address it resolves to.
func (p *EgressProxy) Dial(ctx context.Context, network, hostport string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not host:port", ErrInvalid, hostport)
	}
	addrs, err := p.guard.Allowed(ctx, host)
	if err != nil {
		p.dials("refused")
		p.log.Warn("bucket egress proxy refused a connection", "endpoint", hostport, "err", err)
		return nil, err
	}
	d := net.Dialer{Timeout: dialTimeout}
	for _, a := range addrs {
		var c net.Conn
		c, err = d.DialContext(ctx, "tcp", net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			p.dials("allowed")
			return c, nil
		}
	}
	p.dials("failed")
	return nil, err
}

// HTTPClient makes requests whose connections Dial checks: the daemon's
// own requests to a tenant's endpoint.
func (p *EgressProxy) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: p.Dial, DisableKeepAlives: true, TLSHandshakeTimeout: dialTimeout}}
}

// refuse answers a request the proxy could not carry: 403 for an address
// the guard refuses, 502 when the endpoint did not answer.
func (p *EgressProxy) refuse(w http.ResponseWriter, err error) {
	status := http.StatusBadGateway
	if errors.Is(err, ErrEndpointForbidden) || errors.Is(err, ErrInvalid) {
		status = http.StatusForbidden
	}
	http.Error(w, err.Error(), status)
}
