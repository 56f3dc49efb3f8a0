package sockjoin

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func newJoiner(t *testing.T) *Joiner {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF)")
	}
	j, err := New(16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

const testHost = "h.localhost"

// request is a request the scan lets through (scan.go).
func request(path string, headers ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + testHost + "\r\n" + strings.Join(append(headers, ""), "\r\n") + "\r\n"
}

func readN(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	buf := make([]byte, n)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := io.ReadFull(c, buf)
	if err != nil {
		t.Fatalf("read %q: %v", buf[:m], err)
	}
	return string(buf)
}

func TestJoinForwardsBothWays(t *testing.T) {
	j := newJoiner(t)
	client, front := tcpPair(t) // client -> daemon
	back, service := tcpPair(t) // daemon -> service
	p, err := j.Join(front, back, testHost)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Unjoin()
	for i := 0; i < 3; i++ {
		req := request(fmt.Sprintf("/%d", i))
		client.Write([]byte(req))
		if got := readN(t, service, len(req)); got != req {
			t.Fatalf("service got %q", got)
		}
		service.Write([]byte("pong!"))
		if got := readN(t, client, 5); got != "pong!" {
			t.Fatalf("client got %q", got)
		}
	}
	if diverted, n, err := p.Diverted(); err != nil || diverted || n != uint64(3*len(request("/0"))) {
		t.Errorf("Diverted: %v %d %v", diverted, n, err)
	}
	// The daemon's ends see no bytes, and see the client's close.
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64)
		n, err := front.Read(buf)
		if n > 0 {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	client.Close()
	select {
	case err := <-done:
		if err != io.EOF {
			t.Errorf("front read after the client closed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the daemon's end did not see the client's close")
	}
}

// TestJoinLeavesEndsOfStreamToTheirSockets: a stream's end (a FIN, an
// empty buffer) is seen on the socket that received it, for the daemon
// to pass on, and neither socket of the pair gets an error. Redirected,
// it reached the peer as a send of no bytes, which the kernel failed with
// EPIPE on the peer, and the proxy cut the connection as failed, racing
// the end it was passing on (internal/proxy's
// TestJoinedConnectionsDivertWhatNeedsTheDaemon).
func TestJoinLeavesEndsOfStreamToTheirSockets(t *testing.T) {
	j := newJoiner(t)
	for _, from := range []string{"client", "service"} {
		t.Run(from, func(t *testing.T) {
			client, front := tcpPair(t)
			back, service := tcpPair(t)
			p, err := j.Join(front, back, testHost)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Unjoin()
			req := request("/")
			client.Write([]byte(req))
			readN(t, service, len(req))
			service.Write([]byte("pong!"))
			readN(t, client, 5)
			ending, end := client, front // who ends its stream, and the joined socket that gets the end
			if from == "service" {
				ending, end = service, back
			}
			ending.CloseWrite()
			end.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := end.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("the joined socket after the %s's end: %d bytes, %v; want the end", from, n, err)
			}
			// The kernel reports a failed redirect from a work queue, a
			// moment after the end arrived.
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				for name, s := range map[string]*net.TCPConn{"client's": front, "service's": back} {
					if errno := soError(t, s); errno != 0 {
						t.Fatalf("after the %s's end, the joined %s socket has the error %v", from, name, errno)
					}
				}
			}
		})
	}
}

// soError is c's pending socket error (SO_ERROR), 0 for none.
func soError(t *testing.T, c *net.TCPConn) unix.Errno {
	t.Helper()
	var errno int
	var err error
	if cerr := control(c, func(fd int) { errno, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	return unix.Errno(errno)
}

// TestJoinKeepsWhatNeedsTheDaemon: from the first buffer the scan does
// not pass, the client's bytes stay on the daemon's socket, the later
// ones too, while the service's answers still reach the client.
func TestJoinKeepsWhatNeedsTheDaemon(t *testing.T) {
	j := newJoiner(t)
	for _, tc := range []struct {
		name   string
		writes []string
	}{
		{"Authorization", []string{request("/", "Authorization: Bearer secret")}},
		{"X-Forwarded-For", []string{request("/", "X-Forwarded-For: 203.0.113.9")}},
		{"another Host", []string{"GET / HTTP/1.1\r\nHost: other.localhost\r\n\r\n"}},
		{"a header split across two writes", []string{"GET / HTTP/1.1\r\nHost: " + testHost + "\r\nAuthoriz", "ation: Bearer secret\r\n\r\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, front := tcpPair(t)
			back, service := tcpPair(t)
			p, err := j.Join(front, back, testHost)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Unjoin()
			first := request("/first")
			client.Write([]byte(first))
			if got := readN(t, service, len(first)); got != first {
				t.Fatalf("service got %q", got)
			}
			want := ""
			for _, w := range tc.writes {
				client.Write([]byte(w))
				want += w
				time.Sleep(20 * time.Millisecond) // separate buffers
			}
			later := request("/later")
			client.Write([]byte(later))
			want += later
			if got := readN(t, front, len(want)); got != want {
				t.Errorf("the daemon's socket got %q, want %q", got, want)
			}
			if diverted, n, err := p.Diverted(); err != nil || !diverted || n != uint64(len(first)) {
				t.Errorf("Diverted: %v %d %v", diverted, n, err)
			}
			service.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _ := service.Read(make([]byte, 1)); n != 0 {
				t.Errorf("the service got a byte after the diversion")
			}
			service.Write([]byte("answer"))
			if got := readN(t, client, 6); got != "answer" {
				t.Errorf("client got %q", got)
			}
			cookie, err := j.NextDiverted()
			if err != nil || cookie != p.Client() {
				t.Errorf("NextDiverted: %d %v, want %d", cookie, err, p.Client())
			}
		})
	}
}

// BenchmarkRoundTrip is the kernel's floor of a joined connection: a
// small request (what the scan passes) and a two-byte answer, one at a
// time, over a joined pair (client -> joined socket -> its peer ->
// service and back), against the same over one loopback connection and
// over the alternatives to a socket-map redirect:
//
//	direct:           one loopback connection, no proxy
//	joined:           SK_SKB verdict, egress redirects, the client's buffers scanned
//	joined-unscanned: the same without the scan (its cost)
//	joined-answers-by-sk-msg: joined, and the service's answers sent from its
//	                  own sendmsg by an SK_MSG program (skmsg_test.go): a floor
//	                  for a design that takes the service's socket
//	spliced:          a user-space relay, one goroutine per direction, io.Copy
//	                  between the TCP sockets (splice(2) through a pipe)
//	copied:           the same with read(2)/write(2) through a buffer
func BenchmarkRoundTrip(b *testing.B) { roundTrips(b, false) }

// BenchmarkRoundTripParallel is BenchmarkRoundTrip with 16 pairs at once
// (as BenchmarkPreview's 16 clients), each its own connections: the
// throughput the variants allow when their hand-offs overlap.
func BenchmarkRoundTripParallel(b *testing.B) { roundTrips(b, true) }

func roundTrips(b *testing.B, parallel bool) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (CAP_BPF)")
	}
	j, err := New(64)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	req := []byte(request("/ok"))
	serve := func(service net.Conn) {
		buf := make([]byte, len(req))
		for {
			if _, err := io.ReadFull(service, buf); err != nil {
				return
			}
			service.Write([]byte("ok"))
		}
	}
	roundTrip := func(b *testing.B, client net.Conn, buf []byte) {
		client.Write(req)
		if _, err := io.ReadFull(client, buf); err != nil {
			b.Error(err)
		}
	}
	// Each variant makes a client connection whose requests reach a
	// service connection, and returns them.
	variants := []struct {
		name string
		pair func(b *testing.B) (client, service net.Conn)
	}{
		{"direct", func(b *testing.B) (net.Conn, net.Conn) { return tcpPair(b) }},
		{"joined", func(b *testing.B) (net.Conn, net.Conn) { return joinedPair(b, j, true) }},
		{"joined-unscanned", func(b *testing.B) (net.Conn, net.Conn) { return joinedPair(b, j, false) }},
		{"joined-answers-by-sk-msg", func(b *testing.B) (net.Conn, net.Conn) {
			client, front := tcpPair(b)
			back, service := tcpPair(b)
			b.Cleanup(joinWithMsg(b, front, back, service))
			return client, service
		}},
		{"spliced", func(b *testing.B) (net.Conn, net.Conn) {
			return relayPair(b, func(dst, src *net.TCPConn) { io.Copy(dst, src) })
		}},
		{"copied", func(b *testing.B) (net.Conn, net.Conn) {
			return relayPair(b, func(dst, src *net.TCPConn) {
				io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 32<<10))
			})
		}},
	}
	for _, v := range variants {
		// The parallel pairs are made once and live as long as the
		// parent: b.Run calls its function again for each b.N it tries,
		// and runs its cleanups after each.
		var all []net.Conn
		parent := b
		b.Run(v.name, func(b *testing.B) {
			if !parallel {
				client, service := v.pair(b)
				go serve(service)
				buf := make([]byte, 2)
				for b.Loop() {
					roundTrip(b, client, buf)
				}
				return
			}
			const pairs = 16
			for len(all) < pairs {
				client, service := v.pair(parent)
				go serve(service)
				all = append(all, client)
			}
			clients := make(chan net.Conn, pairs)
			for _, c := range all {
				clients <- c
			}
			b.SetParallelism(pairs / runtime.GOMAXPROCS(0))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				client := <-clients
				buf := make([]byte, 2)
				for pb.Next() {
					roundTrip(b, client, buf)
				}
			})
		})
	}
}

func joinedPair(b *testing.B, j *Joiner, scan bool) (net.Conn, net.Conn) {
	client, front := tcpPair(b)
	back, service := tcpPair(b)
	p, err := j.Join(front, back, testHost)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Unjoin)
	if !scan {
		if err := j.peers.Update(p.client, peerValue(p.service, 0, 0), ebpf.UpdateExist); err != nil {
			b.Fatal(err)
		}
	}
	return client, service
}

func relayPair(b *testing.B, cp func(dst, src *net.TCPConn)) (net.Conn, net.Conn) {
	client, front := tcpPair(b)
	back, service := tcpPair(b)
	go cp(back, front)
	go cp(front, back)
	return client, service
}
