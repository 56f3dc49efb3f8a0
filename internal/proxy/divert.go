package proxy

import (
	"bufio"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Diverted connections. The kernel sends a joined client's requests on to
// the service only while they need nothing of the daemon (sockjoin's scan:
// no credentials, X-Forwarded-*, preview cookie or link, body or upgrade,
// and the first request's Host). From the first buffer that does, it keeps
// the client's bytes on the client's socket, and the proxy serves the rest
// of the connection request by request: each request is read, checked as
// the ordinary path checks it (Request.Recheck), rewritten as it rewrites
// it (X-Forwarded-*, no API token, no preview cookie, no hop-by-hop
// headers) and written to the same service connection. The service's
// answers still reach the client through the kernel: the service answers
// in order, so they stay in order whatever the client pipelined. A
// request that cannot go to this service (another Host, a signed link,
// one the parser refuses) ends the client's half of the connection: the
// service gets an end of stream after the requests before it, and the
// client, once it has their answers, gets its own (a client retries such
// a request on a new connection, where the daemon answers it).

// maxDivertedHeader bounds a diverted request's line and headers, as
// http.Server bounds them.
const maxDivertedHeader = http.DefaultMaxHeaderBytes + 4096

// checkDiverted starts the diversion when the kernel keeps the client's
// bytes, and reports whether it does.
func (jc *joined) checkDiverted() bool {
	if jc.diverting.Load() {
		return true
	}
	diverted, _, err := jc.pair.Diverted()
	if err != nil || !diverted {
		return false
	}
	jc.startDivert()
	return true
}

func (jc *joined) startDivert() {
	jc.divertOnce.Do(func() {
		jc.diverting.Store(true)
		go jc.divert()
	})
}

// watchDiverted starts the diversion of each client the kernel reports.
func (js *joins) watchDiverted() {
	for {
		cookie, err := js.joiner.NextDiverted()
		if err != nil {
			return
		}
		js.mu.Lock()
		jc := js.byCookie[cookie]
		js.mu.Unlock()
		if jc != nil {
			jc.startDivert()
		}
	}
}

// divert serves the client's kept stream request by request, until it
// ends or a request cannot go to this service; then it ends the service's
// incoming stream.
func (jc *joined) divert() {
	// The pair's descriptors stay open while it uses them (joined.use);
	// the client's stream is read through a Go connection of its own,
	// which end() closes to stop the read.
	jc.mu.Lock()
	if jc.over {
		jc.mu.Unlock()
		return
	}
	jc.users++
	defer jc.unuse()
	cc, err := jc.client.fd.conn()
	if err == nil {
		jc.divConns = append(jc.divConns, cc)
	}
	jc.mu.Unlock()
	svc := jc.service.fd
	defer jc.closeServiceWrite(svc)
	_, redirected, derr := jc.pair.Diverted()
	// The service must have been handed every byte the kernel sent on
	// before the daemon writes its first.
	if err != nil || derr != nil || jc.recheck == nil || !jc.service.written(redirected, 100*time.Microsecond) {
		go jc.endFor("diverting: the kernel's bytes did not reach the service", errors.Join(err, derr))
		return
	}
	sw := &sockWriter{fd: svc, timeout: jc.js.idle}
	lr := &io.LimitedReader{R: &keptReader{r: cc, jc: jc, redirected: redirected}}
	br := bufio.NewReaderSize(lr, 4<<10)
	bw := bufio.NewWriterSize(sw, 4<<10)
	for {
		lr.N = maxDivertedHeader
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		lr.N = math.MaxInt64
		req, ok := jc.recheck(r)
		if !ok || req.SandboxID != jc.id || req.Port != jc.port {
			return
		}
		// The service's answer travels through the kernel, so the daemon
		// cannot see whether it switched protocols: an upgrade ends the
		// connection, and the client makes it on a new one.
		if headerHasToken(r.Header, "Connection", "upgrade") || r.Header.Get("Upgrade") != "" {
			return
		}
		r.RemoteAddr = jc.remote
		out := jc.proxy.outgoing(r, req)
		if err := out.Write(bw); err != nil {
			jc.js.log.Debug("a diverted request was cut", "sandbox", jc.id, "port", jc.port, "err", err)
			return
		}
		if err := bw.Flush(); err != nil {
			jc.js.log.Debug("a diverted request was cut", "sandbox", jc.id, "port", jc.port, "err", err)
			return
		}
		if r.Close {
			return
		}
	}
}

// keptReader reads the client's kept stream, to its real end. The kernel
// hands a kept buffer to the socket's readers at once only while no
// answer waits in the socket's queue to go out; otherwise it is queued
// behind the answer, and handed over once the client took that. A read
// meanwhile finds nothing, and when the client's end of stream came, the
// end: the socket's receive side is shut. So an end is taken only once
// every byte the client sent before it was read, and until then the
// reader polls, from every 100 us up to every 100 ms, as long as the
// answer ahead moves (for at most the idle timeout without progress).
type keptReader struct {
	r          io.Reader
	jc         *joined
	redirected uint64 // the client's bytes the kernel sent to the service
	read       uint64

	wait         time.Duration
	sent         uint64 // by the client's socket, when last seen
	sentChangeAt time.Time
}

func (k *keptReader) Read(b []byte) (int, error) {
	for {
		n, err := k.r.Read(b)
		k.read += uint64(n)
		if n > 0 || err != io.EOF || !k.moreComing() {
			return n, err
		}
	}
}

// moreComing reports, after a pause, whether the client sent bytes before
// its end that the kernel has not handed to the socket's readers yet, and
// that it still may.
func (k *keptReader) moreComing() bool {
	s := &k.jc.client
	c, info := s.fd.counts()
	if info == nil || k.jc.isOver() {
		return false
	}
	// The end of stream counts as a byte received.
	if got := c.received - s.base.received; got == 0 || got-1 <= k.redirected+k.read {
		return false
	}
	switch now := time.Now(); {
	case k.sentChangeAt.IsZero() || c.written != k.sent:
		k.sent, k.sentChangeAt, k.wait = c.written, now, 100*time.Microsecond
	case now.Sub(k.sentChangeAt) > k.jc.js.idle:
		return false
	default:
		k.wait = min(2*k.wait, 100*time.Millisecond)
	}
	time.Sleep(k.wait)
	return true
}

// closeServiceWrite ends the service's incoming stream: the client's
// half of the connection is over.
func (jc *joined) closeServiceWrite(svc sock) {
	if jc.client.eof.Swap(true) {
		return // passEOF counted it
	}
	unix.Shutdown(int(svc), unix.SHUT_WR)
	if jc.eofs.Add(1) == 2 {
		jc.end()
	}
}

// conn returns a net.Conn of its own on s's socket (for reading the
// bytes the kernel kept on it).
func (s sock) conn() (io.ReadCloser, error) {
	fd, err := unix.FcntlInt(uintptr(s), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "joined")
	c, err := net.FileConn(f)
	f.Close()
	return c, err
}

// sockWriter writes to a joined socket outside the Go runtime's poller
// (which the kernel would wake for every answer it carries the other
// way), waiting for room with poll(2).
type sockWriter struct {
	fd      sock
	timeout time.Duration
}

var errWriteTimeout = errors.New("the service took nothing for the idle timeout")

func (w *sockWriter) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := unix.Write(int(w.fd), b[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == unix.EAGAIN:
			fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLOUT}}
			k, err := unix.Poll(fds, int(w.timeout.Milliseconds()))
			if err != nil && err != unix.EINTR {
				return n, err
			}
			if k == 0 {
				return n, errWriteTimeout
			}
		case err == unix.EINTR:
		case err != nil:
			return n, err
		}
	}
	return n, nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
