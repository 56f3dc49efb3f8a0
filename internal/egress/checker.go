package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/network"
)

// Bounds of the checker.
const (
	// maxHead is how much of a connection's start the checker reads
	// looking for its name: a ClientHello or an HTTP request head.
	maxHead = 16 << 10
	// headTimeout bounds the wait for it, dialTimeout the dial out.
	headTimeout = 10 * time.Second
	dialTimeout = 10 * time.Second
	// maxConns bounds the connections the checker holds, every sandbox
	// together; more wait to be accepted.
	maxConns = 4096
)

// Checker reads the name a sandbox's connection to port 80 or 443 carries
// (TLS SNI, HTTP Host) and lets it through to its original destination only
// if the sandbox's policy allows that name.
type Checker struct {
	pol     Policies
	denials *Denials
	log     *slog.Logger
	ln      *net.TCPListener
	sem     chan struct{}
	wg      sync.WaitGroup
	once    sync.Once

	// mu guards live: the connections let through, by sandbox address,
	// so that a policy change can cut those it now denies.
	mu   sync.Mutex
	live map[netip.Addr]map[*spliced]struct{}
}

type spliced struct {
	name     string
	dst      netip.Addr
	in, out  net.Conn
	closeOne sync.Once
}

func (s *spliced) close() {
	s.closeOne.Do(func() { s.in.Close(); s.out.Close() })
}

// ListenChecker binds the checker on a free TCP port of every address of
// the host (the table's redirect names it).
func ListenChecker(pol Policies, denials *Denials, log *slog.Logger) (*Checker, error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{})
	if err != nil {
		return nil, fmt.Errorf("name checker: %w", err)
	}
	return &Checker{pol: pol, denials: denials, log: log, ln: ln, sem: make(chan struct{}, maxConns),
		live: map[netip.Addr]map[*spliced]struct{}{}}, nil
}

// Port is the checker's TCP port.
func (c *Checker) Port() uint16 { return uint16(c.ln.Addr().(*net.TCPAddr).Port) }

// Serve handles connections until Close.
func (c *Checker) Serve() { serveTCP(c.ln, c.sem, &c.wg, c.handle) }

// Close stops accepting, cuts every connection and waits for them.
func (c *Checker) Close() error {
	c.once.Do(func() { c.ln.Close() })
	c.mu.Lock()
	for _, m := range c.live {
		for s := range m {
			s.close()
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

// Recheck cuts the connections of the sandbox at src that its policy, as
// it is now, denies. The daemon calls it after changing the policy.
func (c *Checker) Recheck(src netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.live[src] {
		if !c.pol.Decide(src, s.dst, s.name) {
			s.close()
		}
	}
}

func (c *Checker) handle(in *net.TCPConn) {
	defer in.Close()
	src := in.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	key, _, ok := c.pol.PolicyFor(src)
	if !ok {
		return
	}
	dst, err := originalDst(in)
	if err != nil {
		c.log.Warn("name checker: original destination", "sandbox", key, "err", err)
		return
	}
	in.SetReadDeadline(time.Now().Add(headTimeout))
	rec := &recorder{r: in}
	name, reason := sniff(rec)
	in.SetReadDeadline(time.Time{})
	if !c.pol.Decide(src, dst.Addr(), name) {
		what := name
		if what == "" {
			what = dst.String() + " (no name)"
		}
		c.denials.Add(key, Denial{Name: what, Reason: reason, At: time.Now()})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	var d net.Dialer
	out, err := d.DialContext(ctx, "tcp4", dst.String())
	cancel()
	if err != nil {
		return
	}
	s := &spliced{name: name, dst: dst.Addr(), in: in, out: out}
	c.track(src, s, true)
	defer c.track(src, s, false)
	defer s.close()
	if _, err := out.Write(rec.buf); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(in, out)
		in.CloseWrite()
		close(done)
	}()
	io.Copy(out, in)
	if tc, ok := out.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	<-done
}

func (c *Checker) track(src netip.Addr, s *spliced, add bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if add {
		if c.live[src] == nil {
			c.live[src] = map[*spliced]struct{}{}
		}
		c.live[src][s] = struct{}{}
		return
	}
	delete(c.live[src], s)
	if len(c.live[src]) == 0 {
		delete(c.live, src)
	}
}

// recorder keeps what is read through it, up to maxHead, so that it can be
// sent on once the name is known. Writes fail: the sniffing TLS server
// must not answer the sandbox.
type recorder struct {
	r   io.Reader
	buf []byte
}

var errHeadTooLong = errors.New("connection head too long")

func (r *recorder) Read(p []byte) (int, error) {
	if len(r.buf) >= maxHead {
		return 0, errHeadTooLong
	}
	p = p[:min(len(p), maxHead-len(r.buf))]
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

func (r *recorder) Write(p []byte) (int, error)        { return 0, errors.New("read-only") }
func (r *recorder) Close() error                       { return nil }
func (r *recorder) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (r *recorder) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (r *recorder) SetDeadline(t time.Time) error      { return nil }
func (r *recorder) SetReadDeadline(t time.Time) error  { return nil }
func (r *recorder) SetWriteDeadline(t time.Time) error { return nil }

var errSniffed = errors.New("sniffed")

// sniff reads the start of a connection and returns the name it carries:
// the server name of a TLS ClientHello ("sni"), or the Host of an HTTP
// request ("host"); "" when it carries none.
func sniff(rec *recorder) (name, reason string) {
	var first [1]byte
	if _, err := io.ReadFull(rec, first[:]); err != nil {
		return "", "head"
	}
	rest := io.MultiReader(strings.NewReader(string(first[:])), rec)
	if first[0] == 0x16 { // TLS handshake record
		var sni string
		conn := &replayConn{recorder: rec, r: rest}
		tls.Server(conn, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni = h.ServerName
			return nil, errSniffed
		}}).Handshake()
		return network.CanonicalName(sni), "sni"
	}
	req, err := http.ReadRequest(bufio.NewReader(rest))
	if err != nil {
		return "", "host"
	}
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return network.CanonicalName(host), "host"
}

// replayConn reads the sniffed first byte again before the rest.
type replayConn struct {
	*recorder
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// originalDst is where the sandbox meant its connection to go, before the
// table's redirect (SO_ORIGINAL_DST).
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var out netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		// The kernel fills a sockaddr_in; IPv6Mreq is a 20-byte buffer the
		// x/sys wrapper lets us read it into.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			serr = err
			return
		}
		port := uint16(m.Multiaddr[2])<<8 | uint16(m.Multiaddr[3])
		addr := netip.AddrFrom4([4]byte{m.Multiaddr[4], m.Multiaddr[5], m.Multiaddr[6], m.Multiaddr[7]})
		out = netip.AddrPortFrom(addr, port)
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	return out, serr
}
