package egress

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/sandboxd/sandboxd/internal/network"
)

// Policies is what the forwarder and the checker need from the network
// manager: whose address a source is and its policy, and a place to put
// the addresses an answer holds.
type Policies interface {
	PolicyFor(src netip.Addr) (key string, e network.Egress, ok bool)
	Resolved(ctx context.Context, src netip.Addr, name string, addrs []netip.Addr, ttl time.Duration) error
	// Decide says whether a connection from src to dst naming name (TLS
	// SNI or HTTP Host; "" when it named none) may go through.
	Decide(src, dst netip.Addr, name string) bool
}

// Bounds of the forwarder.
const (
	// maxInFlight bounds the queries being answered at once, every
	// sandbox together; more UDP queries are dropped (the resolver
	// retries), more TCP connections wait.
	maxInFlight = 256
	// upstreamTimeout bounds one exchange with one upstream server.
	upstreamTimeout = 5 * time.Second
	// tcpIdle bounds the wait for a query on a TCP connection.
	tcpIdle = 10 * time.Second
	// maxMessage is the largest DNS message (TCP framing allows no more).
	maxMessage = 65535
)

// Forwarder is the DNS server every internet-mode sandbox's DNS goes to.
type Forwarder struct {
	pol       Policies
	upstreams []netip.AddrPort
	denials   *Denials
	log       *slog.Logger

	udp  *net.UDPConn
	tcp  *net.TCPListener
	sem  chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// ListenDNS binds the forwarder on every address of the host, UDP and TCP
// on the same free port (the table's redirect names it). upstreams are
// where allowed queries go (port 53 unless given).
func ListenDNS(pol Policies, upstreams []netip.AddrPort, denials *Denials, log *slog.Logger) (*Forwarder, error) {
	if len(upstreams) == 0 {
		return nil, errors.New("DNS forwarder: no upstream server")
	}
	var lastErr error
	for range 20 {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			return nil, fmt.Errorf("DNS forwarder: %w", err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		t, err := net.ListenTCP("tcp4", &net.TCPAddr{Port: port})
		if err != nil {
			u.Close()
			lastErr = err
			continue
		}
		return &Forwarder{pol: pol, upstreams: upstreams, denials: denials, log: log,
			udp: u, tcp: t, sem: make(chan struct{}, maxInFlight)}, nil
	}
	return nil, fmt.Errorf("DNS forwarder: no port free for both UDP and TCP: %w", lastErr)
}

// Port is the forwarder's port, UDP and TCP.
func (f *Forwarder) Port() uint16 { return uint16(f.udp.LocalAddr().(*net.UDPAddr).Port) }

// Serve answers queries until Close.
func (f *Forwarder) Serve() {
	f.wg.Add(2)
	go func() { defer f.wg.Done(); f.serveUDP() }()
	go func() { defer f.wg.Done(); f.serveTCP() }()
	f.wg.Wait()
}

// Close stops the forwarder and waits for the queries in flight.
func (f *Forwarder) Close() error {
	f.once.Do(func() {
		f.udp.Close()
		f.tcp.Close()
	})
	f.wg.Wait()
	return nil
}

func (f *Forwarder) serveUDP() {
	buf := make([]byte, maxMessage)
	for {
		n, from, err := f.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		select {
		case f.sem <- struct{}{}:
		default:
			continue // too many in flight: the resolver asks again
		}
		q := append([]byte(nil), buf[:n]...)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() { <-f.sem }()
			if resp := f.answer(from.Addr(), q, false); resp != nil {
				f.udp.WriteToUDPAddrPort(resp, from)
			}
		}()
	}
}

func (f *Forwarder) serveTCP() {
	serveTCP(f.tcp, f.sem, &f.wg, func(c *net.TCPConn) {
		defer c.Close()
		f.serveConn(c)
	})
}

// serveTCP accepts on ln until it is closed and handles each connection on
// its own goroutine, at most cap(sem) at once (accepting waits for a free
// slot) and counted in wg. Running out of descriptors pauses accepting
// briefly instead of spinning.
func serveTCP(ln *net.TCPListener, sem chan struct{}, wg *sync.WaitGroup, handle func(*net.TCPConn)) {
	for {
		conn, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			handle(conn)
		}()
	}
}

// serveConn answers the queries of one TCP connection, one at a time.
func (f *Forwarder) serveConn(c *net.TCPConn) {
	from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	if _, _, ok := f.pol.PolicyFor(from); !ok {
		return
	}
	for {
		c.SetDeadline(time.Now().Add(tcpIdle))
		q, err := readTCPMessage(c)
		if err != nil {
			return
		}
		resp := f.answer(from, q, true)
		if resp == nil {
			return
		}
		if err := writeTCPMessage(c, resp); err != nil {
			return
		}
	}
}

func readTCPMessage(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func writeTCPMessage(w io.Writer, msg []byte) error {
	out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg)))
	_, err := w.Write(append(out, msg...))
	return err
}

// answer is the forwarder's reply to query q from src, or nil to send none
// (a source that is no sandbox, a message that is no query).
func (f *Forwarder) answer(src netip.Addr, q []byte, overTCP bool) []byte {
	key, pol, ok := f.pol.PolicyFor(src)
	if !ok {
		return nil
	}
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil || h.Response {
		return nil
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 || h.OpCode != 0 {
		return reply(h, qs, dnsmessage.RCodeFormatError)
	}
	name := network.CanonicalName(qs[0].Name.String())
	ctx, cancel := context.WithTimeout(context.Background(), 2*upstreamTimeout)
	defer cancel()
	if v, listed := pol.Decide(name); v == network.Denied {
		f.denials.Add(key, Denial{Name: name, Reason: "dns", At: time.Now()})
		// Under a default-allow policy the deny list is all there is: learn
		// the denied name's addresses so that the dns_deny set closes them.
		// Under default deny nothing unlisted is sent upstream at all.
		if listed && !pol.DefaultDeny && isAddressQuery(qs[0]) {
			if resp, err := f.exchange(ctx, q, overTCP); err == nil {
				if addrs, ttl := addresses(resp); len(addrs) > 0 {
					if err := f.pol.Resolved(ctx, src, name, addrs, ttl); err != nil {
						f.log.Warn("closing a denied name's addresses", "sandbox", key, "err", err)
					}
				}
			}
		}
		return reply(h, qs, dnsmessage.RCodeNameError)
	}
	resp, err := f.exchange(ctx, q, overTCP)
	if err != nil {
		f.log.Debug("DNS upstream", "sandbox", key, "err", err)
		return reply(h, qs, dnsmessage.RCodeServerFailure)
	}
	if addrs, ttl := addresses(resp); len(addrs) > 0 {
		if err := f.pol.Resolved(ctx, src, name, addrs, ttl); err != nil {
			f.log.Warn("opening resolved addresses", "sandbox", key, "err", err)
			return reply(h, qs, dnsmessage.RCodeServerFailure)
		}
	}
	return resp
}

func isAddressQuery(q dnsmessage.Question) bool {
	return q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeAAAA || q.Type == dnsmessage.TypeALL
}

// reply is an answer with no records and rcode.
func reply(h dnsmessage.Header, qs []dnsmessage.Question, rcode dnsmessage.RCode) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{
		ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, RCode: rcode,
	})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil
	}
	for _, q := range qs {
		if err := b.Question(q); err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// addresses returns the IPv4 addresses of resp's answer section (the end
// of a CNAME chain included) and the smallest TTL among them.
func addresses(resp []byte) ([]netip.Addr, time.Duration) {
	var p dnsmessage.Parser
	if _, err := p.Start(resp); err != nil {
		return nil, 0
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, 0
	}
	var out []netip.Addr
	ttl := uint32(0)
	for {
		h, err := p.AnswerHeader()
		if err != nil {
			break
		}
		if h.Type != dnsmessage.TypeA {
			if err := p.SkipAnswer(); err != nil {
				break
			}
			continue
		}
		a, err := p.AResource()
		if err != nil {
			break
		}
		if len(out) == 0 || h.TTL < ttl {
			ttl = h.TTL
		}
		out = append(out, netip.AddrFrom4(a.A))
	}
	return out, time.Duration(ttl) * time.Second
}

// exchange sends q to the upstreams in turn until one answers it.
func (f *Forwarder) exchange(ctx context.Context, q []byte, overTCP bool) ([]byte, error) {
	var errs []error
	for _, up := range f.upstreams {
		resp, err := exchangeOne(ctx, up, q, overTCP)
		if err == nil {
			return resp, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func exchangeOne(ctx context.Context, up netip.AddrPort, q []byte, overTCP bool) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, upstreamTimeout)
	defer cancel()
	network := "udp"
	if overTCP {
		network = "tcp"
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, up.String())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	id := binary.BigEndian.Uint16(q)
	if overTCP {
		if err := writeTCPMessage(c, q); err != nil {
			return nil, err
		}
		resp, err := readTCPMessage(c)
		if err != nil {
			return nil, err
		}
		if len(resp) < 12 || binary.BigEndian.Uint16(resp) != id {
			return nil, fmt.Errorf("%s: answer does not match the query", up)
		}
		return resp, nil
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, maxMessage)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		// A datagram with another ID is not our answer (spoofed or late).
		if n >= 12 && binary.BigEndian.Uint16(buf) == id {
			return buf[:n], nil
		}
	}
}
