package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/sockjoin"
)

// Joined connections. After the first request on a client's connection has
// been authorised and answered the ordinary way, the proxy can join the
// client's connection to its connection to the service in the kernel
// (package sockjoin): the connection's later requests and answers then
// pass between the two sockets without waking the daemon, which a proxy
// that reads each request cannot do (on a small VM two wake-ups and four
// socket calls per request were most of a small answer's cost,
// bench/results/preview-urls.txt). The kernel sends on only the later
// requests that need nothing of the daemon; the others come back to the
// proxy (divert.go). What this changes for users is in
// docs/security.md#joined-preview-connections---preview-join.
//
// The switch happens at a moment when neither side can be sending: the
// service has sent its whole answer (read by the proxy, Content-Length
// bounded), and the client waits for it. The sockets are joined, then the
// answer is written: every byte either side sends after that is carried by
// the kernel. A client that sent more before its answer (pipelining) is
// answered and its connection closed instead.

// maxJoinBody bounds the first answer a connection is joined after: the
// proxy holds it whole, to write it only once the sockets are joined.
const maxJoinBody = 64 << 10

// joinWriteTimeout bounds the write of that answer.
const joinWriteTimeout = 10 * time.Second

type connKey struct{}

// WithConn is an http.Server's ConnContext: it keeps each client's
// connection in its requests' contexts, which lets the proxy join it.
func WithConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// joins are a Proxy's joined connections.
type joins struct {
	joiner *sockjoin.Joiner
	idle   time.Duration
	slots  *inFlight
	log    *slog.Logger

	poller *endPoller

	mu       sync.Mutex
	pairs    map[*joined]struct{}
	sides    map[uint64]*side   // by poller key
	byCookie map[uint64]*joined // by the client socket's cookie
	nextID   uint64
	sweep    *time.Timer
	closed   bool
}

// joined is one client connection joined to a service's.
type joined struct {
	js              *joins
	id              string
	port            int
	client, service side
	pair            *sockjoin.Pair
	release         func() // the sandbox's lease and the join's slot

	// The ordinary path's checks and rewriting, for the requests the
	// kernel kept (divert.go).
	proxy   *Proxy
	recheck func(*http.Request) (Request, bool)
	remote  string

	eofs atomic.Int32
	once sync.Once

	divertOnce sync.Once
	diverting  atomic.Bool
	// mu guards over, users and divConns. end() closes the sockets'
	// descriptors (client.fd, service.fd) only once no goroutine uses
	// them (use): a number closed under a user may be given to another
	// socket of the process at once, and a late shutdown(2) or write(2)
	// then hits that socket. (A passEOF that ran after a failure had
	// ended its pair shut down the next client's connection:
	// TestJoinedConnectionsDivertWhatNeedsTheDaemon, "unexpected EOF".)
	mu       sync.Mutex
	divConns []io.Closer // Go's connections (safe to close under a reader)
	over     bool
	users    int
}

// side is one socket of a joined pair.
type side struct {
	jc  *joined
	fd  sock // -1: none
	key uint64
	// What the daemon itself read from and wrote to the socket before
	// the join: what the kernel moved since comes on top.
	base streamCount
	eof  atomic.Bool
}

func (s *side) peer() *side {
	if s == &s.jc.client {
		return &s.jc.service
	}
	return &s.jc.client
}

func newJoins(j *sockjoin.Joiner, idle time.Duration, l Limits, log *slog.Logger) (*joins, error) {
	ep, err := newEndPoller()
	if err != nil {
		return nil, err
	}
	js := &joins{joiner: j, idle: idle, slots: newInFlight(l.MaxInFlightPerSandbox, l.MaxInFlight), log: log,
		pairs: map[*joined]struct{}{}, poller: ep, sides: map[uint64]*side{}, byCookie: map[uint64]*joined{}}
	go ep.run(js.ended)
	go js.watchDiverted()
	return js, nil
}

// joinable reports whether the connection of r may be joined after resp,
// before anything of resp's body has been read.
func joinable(r *http.Request, resp *http.Response) (*net.TCPConn, bool) {
	c, ok := r.Context().Value(connKey{}).(*net.TCPConn)
	return c, ok && r.TLS == nil && r.ProtoAtLeast(1, 1) && resp.ProtoAtLeast(1, 1) && !r.Close && !resp.Close &&
		resp.StatusCode >= 200 && resp.ContentLength >= 0 && resp.ContentLength <= maxJoinBody && len(resp.Trailer) == 0
}

// tryJoin answers r with resp and joins the client's connection to u's,
// when both allow it; it reports false, having spent nothing of resp or
// of w, when they do not.
func (p *Proxy) tryJoin(w http.ResponseWriter, r *http.Request, req Request, resp *http.Response, u *upstream, onError func(http.ResponseWriter, *http.Request, error)) bool {
	js := p.joins
	client, ok := joinable(r, resp)
	service, ok2 := u.Conn.(*net.TCPConn)
	if js == nil || req.Hold == nil || !ok || !ok2 || !js.slots.acquire(req.SandboxID) {
		return false
	}
	hold, err := req.Hold()
	if err != nil {
		js.slots.release(req.SandboxID)
		return false
	}
	release := func() { hold(); js.slots.release(req.SandboxID) }
	// The whole body, so that the service has nothing more to send.
	body, err := readBody(resp, u, p.limits.HeaderTimeout)
	if err != nil {
		release()
		u.Conn.Close()
		p.fail(w, r, err, onError)
		return true
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if u.Reader.Buffered() > 0 || pending(service) {
		// The service sent more than its answer: the ordinary way.
		release()
		p.copyResponse(w, r, resp, u)
		u.Conn.Close()
		return true
	}
	// What each socket received and was given to send so far is the
	// daemon's: what the kernel moves after the join comes on top.
	serviceBase := counts(service)
	clientBase := counts(client)
	head := w.Header().Clone()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		release()
		if p.copyResponse(w, r, resp, u) && !resp.Close && !r.Close {
			p.pool.Put(upstreamHost(req.SandboxID, req.Port), u, time.Now())
		} else {
			u.Conn.Close()
		}
		return true
	}
	var pair *sockjoin.Pair
	if brw.Reader.Buffered() == 0 && !pending(client) {
		pair, err = js.joiner.Join(client, service, r.Host)
		if err != nil {
			js.log.Debug("joining a preview connection", "err", err)
		} else if pending(client) {
			// Bytes came in before the join took: a pipelining client.
			pair.Unjoin()
			pair = nil
		}
	}
	out := joinResponse(r, resp, head, body, pair == nil)
	conn.SetWriteDeadline(time.Now().Add(joinWriteTimeout))
	_, err = conn.Write(out)
	conn.SetWriteDeadline(time.Time{})
	if pair == nil || err != nil {
		if pair != nil {
			pair.Unjoin()
		}
		release()
		conn.Close()
		u.Conn.Close()
		return true
	}
	clientBase.written += uint64(len(out))
	jc := &joined{js: js, id: req.SandboxID, port: req.Port, pair: pair, release: release,
		proxy: p, recheck: req.Recheck, remote: r.RemoteAddr}
	jc.client = side{jc: jc, base: clientBase}
	jc.service = side{jc: jc, base: serviceBase}
	// The sockets leave the Go runtime's poller, which the kernel would
	// wake for every request it carries (the sockets' readers are told
	// of data even when all of it went to the peer): a poller of the
	// joins' own hears only of their ends.
	var errC, errS error
	jc.client.fd, errC = detach(client)
	jc.service.fd, errS = detach(service)
	if errC != nil || errS != nil || !js.add(jc) {
		jc.endFor("detaching or watching its sockets", errors.Join(errC, errS))
	}
	return true
}

// readBody reads resp's body (at most maxJoinBody bytes, as its
// Content-Length says) from u.
func readBody(resp *http.Response, u *upstream, timeout time.Duration) ([]byte, error) {
	u.Conn.SetReadDeadline(time.Now().Add(timeout))
	defer u.Conn.SetReadDeadline(time.Time{})
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJoinBody+1))
	if err == nil && int64(len(body)) != resp.ContentLength && resp.Request.Method != http.MethodHead {
		err = io.ErrUnexpectedEOF
	}
	resp.Body.Close()
	return body, err
}

// joinResponse is resp as the client gets it: the service's headers but
// the hop-by-hop ones, over those the daemon set (head).
func joinResponse(r *http.Request, resp *http.Response, head http.Header, body []byte, closing bool) []byte {
	removeHopHeaders(resp.Header)
	for k, v := range resp.Header {
		head[k] = v
	}
	if _, ok := head["Date"]; !ok {
		head.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	out := &http.Response{
		Status: resp.Status, StatusCode: resp.StatusCode, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: head, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: resp.ContentLength,
		Request: r, Close: closing,
	}
	var b bytes.Buffer
	out.Write(&b)
	return b.Bytes()
}

// pending reports whether c has received bytes nobody read.
func pending(c *net.TCPConn) bool {
	p := false
	control(c, func(fd int) { p = sock(fd).pending() })
	return p
}

func counts(c *net.TCPConn) streamCount {
	var sc streamCount
	control(c, func(fd int) { sc, _ = sock(fd).counts() })
	return sc
}

func control(c *net.TCPConn, f func(fd int)) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// detach returns a descriptor of c's socket of its own and closes c.
func detach(c *net.TCPConn) (sock, error) {
	fd := -1
	var err error
	control(c, func(cfd int) { fd, err = unix.FcntlInt(uintptr(cfd), unix.F_DUPFD_CLOEXEC, 0) })
	c.Close()
	if err != nil {
		return -1, err
	}
	return sock(fd), nil
}

// sock is the descriptor of a joined socket, outside the Go runtime.
type sock int

func (s sock) pending() bool {
	n, _ := unix.IoctlGetInt(int(s), unix.SIOCINQ)
	return n > 0
}

// streamCount is what a socket has received and been given to send, in
// bytes, since it opened (TCP_INFO).
type streamCount struct{ received, written uint64 }

func (s sock) counts() (streamCount, *unix.TCPInfo) {
	info, err := unix.GetsockoptTCPInfo(int(s), unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return streamCount{}, nil
	}
	return streamCount{received: info.Bytes_received, written: info.Bytes_sent - info.Bytes_retrans + uint64(info.Notsent_bytes)}, info
}

// add registers jc's sockets with the poller of ends.
func (js *joins) add(jc *joined) bool {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.closed {
		return false
	}
	for _, s := range []*side{&jc.client, &jc.service} {
		js.nextID++
		s.key = js.nextID
		if err := js.poller.watch(s.fd, s.key); err != nil {
			return false
		}
		js.sides[s.key] = s
	}
	js.pairs[jc] = struct{}{}
	js.byCookie[jc.pair.Client()] = jc
	if js.sweep == nil {
		js.sweep = time.AfterFunc(js.idle/4, js.expire)
	}
	// The kernel may have kept a request before the pair was known here.
	go jc.checkDiverted()
	return true
}

// ended is told by the poller what the socket of key saw (epoll events):
// its peer's side of the stream ended (EPOLLRDHUP), or it failed.
func (js *joins) ended(key uint64, events uint32) {
	js.mu.Lock()
	s := js.sides[key]
	js.mu.Unlock()
	if s == nil {
		return
	}
	if s.failed(events) {
		go s.jc.endFor("a socket failed", nil)
		return
	}
	if s == &s.jc.client && s.jc.checkDiverted() {
		// The diversion reads the client's stream to its end.
		return
	}
	if !s.eof.Swap(true) {
		go s.passEOF()
	}
}

// failed reports whether events say that s's pair can carry nothing more.
// A socket that hung up or failed without an end of stream failed. So
// did a client's socket with any error: a reset, or the kernel's failure
// to send it what the service answered (EPIPE, after which the kernel
// drops the rest); the error comes with EPOLLRDHUP when the client's
// stream had ended or a reset ended it, and taken for that end it was
// ignored the second time, while the service's end waited for bytes the
// client's socket would never send, until the idle cut. A service's error
// with its end (a service that reset after its answer) is its end: what
// it sent before is on its way to the client.
func (s *side) failed(events uint32) bool {
	if events&unix.EPOLLRDHUP == 0 {
		return events&(unix.EPOLLERR|unix.EPOLLHUP) != 0
	}
	return events&unix.EPOLLERR != 0 && s == &s.jc.client
}

// passEOF passes the end of s's incoming stream on to its peer, once the
// kernel has sent the peer everything that came before; the pair ends
// when both streams have ended, or soon after the service's did.
func (s *side) passEOF() {
	if !s.jc.use() {
		return // ended meanwhile
	}
	defer s.jc.unuse()
	p := s.peer()
	if !s.drained(p) {
		s.jc.endFor("a stream's end came before its bytes were passed on", nil)
		return
	}
	unix.Shutdown(int(p.fd), unix.SHUT_WR)
	switch {
	case s.jc.eofs.Add(1) == 2:
		s.jc.end()
	case s == &s.jc.service:
		// A joined connection carries HTTP/1.1 requests and answers: a
		// service whose stream ended answers nothing more, so the pair
		// (and the sandbox's hold) need not wait for a client that keeps
		// its end open. Not at once: closing a socket that still has
		// bytes of the client's unread resets it, and a reset can drop
		// the end of the answer still on its way to the client (the
		// delay is net/http's server's own before it closes, for the
		// same reason).
		time.AfterFunc(serviceEndGrace, s.jc.end)
	}
}

// serviceEndGrace is how long a pair whose service's stream ended waits
// for the client's end before it ends anyway.
const serviceEndGrace = 500 * time.Millisecond

// drained waits until the kernel has written to p every byte s received,
// and reports whether it did before the idle timeout passed without
// progress.
func (s *side) drained(p *side) bool {
	in, info := s.fd.counts()
	if info == nil {
		return false
	}
	// The end of stream counts as a byte received.
	return p.written(in.received-s.base.received-1, time.Millisecond)
}

// written waits, polling from every firstWait up to every 100 ms, until
// the kernel has written n bytes to s's socket more than the daemon did
// before the join, and reports whether it did before the idle timeout
// passed without progress or the pair ended. The caller uses the pair's
// descriptors (joined.use).
func (s *side) written(n uint64, firstWait time.Duration) bool {
	last, since := uint64(0), time.Now()
	for wait := firstWait; !s.jc.isOver(); wait = min(2*wait, 100*time.Millisecond) {
		out, info := s.fd.counts()
		if info == nil {
			return false
		}
		sent := out.written - s.base.written
		if sent >= n {
			return true
		}
		if sent != last {
			last, since = sent, time.Now()
		} else if time.Since(since) > s.jc.js.idle {
			return false
		}
		time.Sleep(wait)
	}
	return false
}

// use reports whether jc is not over, and if so keeps its sockets'
// descriptors open until the matching unuse.
func (jc *joined) use() bool {
	jc.mu.Lock()
	defer jc.mu.Unlock()
	if jc.over {
		return false
	}
	jc.users++
	return true
}

// unuse ends a use; the last user of an ended pair closes its sockets.
func (jc *joined) unuse() {
	jc.mu.Lock()
	jc.users--
	last := jc.over && jc.users == 0
	jc.mu.Unlock()
	if last {
		jc.closeSockets()
	}
}

func (jc *joined) isOver() bool {
	jc.mu.Lock()
	defer jc.mu.Unlock()
	return jc.over
}

// closeSockets closes the pair's descriptors, which also takes them out
// of the poller of ends.
func (jc *joined) closeSockets() {
	for _, s := range []*side{&jc.client, &jc.service} {
		if s.fd >= 0 {
			unix.Close(int(s.fd))
		}
	}
}

// endFor ends jc before its streams did, saying why at debug level: a
// client whose connection is cut mid-transfer sees only a reset.
func (jc *joined) endFor(why string, err error) {
	jc.js.log.Debug("a joined preview connection is cut", "sandbox", jc.id, "port", jc.port, "why", why, "err", err)
	jc.end()
}

// end closes both sockets (once no one uses them) and lets the sandbox go.
func (jc *joined) end() {
	jc.once.Do(func() {
		jc.pair.Unjoin()
		js := jc.js
		js.mu.Lock()
		delete(js.pairs, jc)
		if js.byCookie[jc.pair.Client()] == jc {
			delete(js.byCookie, jc.pair.Client())
		}
		for _, s := range []*side{&jc.client, &jc.service} {
			delete(js.sides, s.key)
		}
		js.mu.Unlock()
		jc.mu.Lock()
		jc.over = true
		for _, c := range jc.divConns {
			c.Close() // a diversion waiting to read returns
		}
		unused := jc.users == 0
		jc.mu.Unlock()
		if unused {
			jc.closeSockets()
		}
		jc.release()
	})
}

// expire ends the pairs that moved no byte for the idle timeout; it runs
// while any pair is joined.
func (js *joins) expire() {
	js.mu.Lock()
	var idle, all []*joined
	for jc := range js.pairs {
		all = append(all, jc)
		if _, info := jc.client.fd.counts(); info == nil ||
			time.Duration(min(info.Last_data_recv, info.Last_data_sent))*time.Millisecond >= js.idle {
			idle = append(idle, jc)
		}
	}
	js.sweep = nil
	if len(js.pairs) > len(idle) && !js.closed {
		js.sweep = time.AfterFunc(js.idle/4, js.expire)
	}
	js.mu.Unlock()
	for _, jc := range idle {
		jc.endFor("idle", nil)
	}
	// A kept request whose news the ring buffer dropped (it was full).
	for _, jc := range all {
		jc.checkDiverted()
	}
}

// drop ends the pairs joined to port of sandbox id (port 0: every port).
func (js *joins) drop(id string, port int) {
	js.mu.Lock()
	var ended []*joined
	for jc := range js.pairs {
		if jc.id == id && (port == 0 || jc.port == port) {
			ended = append(ended, jc)
		}
	}
	js.mu.Unlock()
	for _, jc := range ended {
		jc.end()
	}
}

func (js *joins) close() {
	js.mu.Lock()
	js.closed = true
	var all []*joined
	for jc := range js.pairs {
		all = append(all, jc)
	}
	if js.sweep != nil {
		js.sweep.Stop()
	}
	js.mu.Unlock()
	for _, jc := range all {
		jc.end()
	}
	js.poller.close()
	js.joiner.Close()
}

// endPoller waits for the ends of joined sockets: an epoll instance of its
// own that asks for hang-ups only (EPOLLRDHUP), so that the bytes the
// kernel carries between the sockets never wake it.
type endPoller struct {
	epfd, stop int
}

func newEndPoller() (*endPoller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stop, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(stop)
		return nil, err
	}
	return &endPoller{epfd: epfd, stop: stop}, nil
}

// watch asks for the end of s, reported with key (never 0).
func (e *endPoller) watch(s sock, key uint64) error {
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(key)), Pad: int32(uint32(key >> 32))}
	return unix.EpollCtl(e.epfd, unix.EPOLL_CTL_ADD, int(s), &ev)
}

// run reports the events of the sockets watched to ended until close.
func (e *endPoller) run(ended func(key uint64, events uint32)) {
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(e.epfd, events, -1)
		if err != nil && err != unix.EINTR {
			return
		}
		for _, ev := range events[:max(n, 0)] {
			key := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if key == 0 {
				unix.Close(e.epfd)
				unix.Close(e.stop)
				return
			}
			ended(key, ev.Events)
		}
	}
}

func (e *endPoller) close() {
	var one [8]byte
	one[0] = 1
	unix.Write(e.stop, one[:])
}
