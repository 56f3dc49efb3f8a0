package httpserve

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestGuardClosesConnectionsPastItsBound: past max open connections a new
// one is closed at once; one closed by its client, or hijacked by a
// handler, makes room again.
func TestGuardClosesConnectionsPastItsBound(t *testing.T) {
	const max = 8
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			// Kept open by the handler's new owner, as a WebSocket is.
			t.Cleanup(func() { c.Close() })
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := guard(&http.Server{Handler: mux}, "test", slog.New(slog.DiscardHandler), max, PerSource{})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	ask := func(path string) bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}
	answered := 0
	for range max + 4 {
		if ask("/") {
			answered++
		}
	}
	if answered != max {
		t.Fatalf("%d of %d connections answered, want %d", answered, max+4, max)
	}
	// Let one go: there is room for one more, after the server has seen
	// it close.
	held[0].Close()
	if !eventually(func() bool { return ask("/") }) {
		t.Error("no room after a connection closed")
	}
	// A hijacked connection leaves the count (it has bounds of its own).
	held[1].Close()
	if !eventually(func() bool { return ask("/hijack") }) {
		t.Fatal("the hijacking call was not answered")
	}
	if !ask("/") {
		t.Error("a hijacked connection still counts")
	}
}

func eventually(f func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f() {
			return true
		}
	}
	return false
}

// TestGuardBoundsEachSource: one source address keeps at most per.Max
// connections open, so that it cannot hold the listener at its bound by
// re-sending requests; other sources, exempt ones (a reverse proxy in
// front) and connections it closes make room as before.
func TestGuardBoundsEachSource(t *testing.T) {
	const perSource = 4
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	exempt, err := ParseExempt("127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	srv := guard(&http.Server{Handler: mux}, "test", slog.New(slog.DiscardHandler), 64, PerSource{Max: perSource, Exempt: exempt})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	held := map[string][]net.Conn{}
	t.Cleanup(func() {
		for _, cs := range held {
			for _, c := range cs {
				c.Close()
			}
		}
	})
	ask := func(from string) bool {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held[from] = append(held[from], c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}
	answered := func(from string, n int) int {
		ok := 0
		for range n {
			if ask(from) {
				ok++
			}
		}
		return ok
	}
	for _, tc := range []struct {
		from string
		want int
	}{{"127.0.0.1", perSource}, {"127.0.0.2", perSource}, {"127.0.0.3", perSource + 2}} {
		if got := answered(tc.from, perSource+2); got != tc.want {
			t.Errorf("from %s: %d of %d connections answered, want %d", tc.from, got, perSource+2, tc.want)
		}
	}
	// Once the source lets one go, it has room for one more.
	held["127.0.0.1"][0].Close()
	if !eventually(func() bool { return ask("127.0.0.1") }) {
		t.Error("no room for a source after one of its connections closed")
	}
}

// TestSourceKeys: an IPv6 source is counted by its /64 (one host may
// hold a /64's addresses), an IPv4 one by its address, an IPv4-mapped one
// as IPv4; exempt and address-less sources are not counted.
func TestSourceKeys(t *testing.T) {
	exempt, err := ParseExempt("loopback, 10.1.0.0/16,2001:db8:ff::7")
	if err != nil {
		t.Fatal(err)
	}
	g := &connGuard{per: PerSource{Max: 1, Exempt: exempt}}
	for _, tc := range []struct {
		remote net.Addr
		want   string // "" not counted
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7/32"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 1}, "2001:db8:1:2::/64"},
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.9"), Port: 1}, ""},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, ""},
		{&net.TCPAddr{IP: net.ParseIP("10.1.200.3"), Port: 1}, ""},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:ff::7"), Port: 1}, ""},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:ff::8"), Port: 1}, "2001:db8:ff::/64"},
		{&net.UnixAddr{Name: "@self", Net: "unix"}, ""},
	} {
		src, counted := g.source(remoteConn{remote: tc.remote})
		got := ""
		if counted {
			got = src.String()
		}
		if got != tc.want {
			t.Errorf("%s counted as %q, want %q", tc.remote, got, tc.want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "loopbacks"} {
		if _, err := ParseExempt(bad); err == nil {
			t.Errorf("ParseExempt(%q) took it", bad)
		}
	}
}

type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }
