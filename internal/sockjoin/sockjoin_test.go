package sockjoin

import (
	"io"
	"net"
	"os"
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

func TestJoinForwardsBothWays(t *testing.T) {
	j := newJoiner(t)
	client, front := tcpPair(t) // client -> daemon
	back, service := tcpPair(t) // daemon -> service
	p, err := j.Join(front, back)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Unjoin()
	buf := make([]byte, 64)
	for i := 0; i < 3; i++ {
		client.Write([]byte("ping"))
		service.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.ReadFull(service, buf[:4])
		if err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("service got %q %v", buf[:n], err)
		}
		service.Write([]byte("pong!"))
		client.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err = io.ReadFull(client, buf[:5])
		if err != nil || string(buf[:n]) != "pong!" {
			t.Fatalf("client got %q %v", buf[:n], err)
		}
	}
	// The daemon's ends see no bytes, and see the client's close.
	done := make(chan error, 1)
	go func() {
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
			buf := make([]byte, 2)
			for {
				if _, err := io.ReadFull(service, buf); err != nil {
					return
				}
				service.Write(buf)
			}
		}()
		buf := make([]byte, 2)
		for b.Loop() {
			client.Write([]byte("ok"))
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
		p, err := j.Join(front, back)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Unjoin()
		run(b, client, service)
	})
}
