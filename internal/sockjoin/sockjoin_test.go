package sockjoin

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
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
// two-byte message and a two-byte answer over a joined pair (client ->
// joined socket -> its peer -> service and back), against the same over
// one loopback connection.
func BenchmarkRoundTrip(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (CAP_BPF)")
	}
	j, err := New(4)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	run := func(b *testing.B, client, service net.Conn) {
		go func() {
			buf := make([]byte, len(request("/ok")))
			for {
				if _, err := io.ReadFull(service, buf); err != nil {
					return
				}
				service.Write([]byte("ok"))
			}
		}()
		buf := make([]byte, 2)
		req := []byte(request("/ok"))
		for b.Loop() {
			client.Write(req)
			if _, err := io.ReadFull(client, buf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		client, service := tcpPair(b)
		run(b, client, service)
	})
	b.Run("joined", func(b *testing.B) {
		client, front := tcpPair(b)
		back, service := tcpPair(b)
		p, err := j.Join(front, back, testHost)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Unjoin()
		run(b, client, service)
	})
}
