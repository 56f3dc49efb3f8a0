package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// joinFront serves the proxy with joined connections for sandbox "demo"
// port 8080 at addr; held counts the holds taken and not released.
func joinFront(t *testing.T, addr string, held *atomic.Int32) *httptest.Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("joining sockets needs root (CAP_BPF)")
	}
	p := New(Options{JoinConnections: true, Dial: func(ctx context.Context, id string, port int) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}})
	if !p.Joining() {
		t.Fatal("the kernel refused the join program")
	}
	t.Cleanup(p.Close)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Serve(w, r, Request{SandboxID: "demo", Port: 8080, Host: r.Host, Hold: func() (func(), error) {
			held.Add(1)
			return func() { held.Add(-1) }, nil
		}}, func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
		})
	}))
	srv.Config.ConnContext = WithConn
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestJoinedConnectionsPassEndsOfStreamOn(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%q", r.Header.Get("X-Forwarded-For"))
	})
	mux.HandleFunc("/bye", func(w http.ResponseWriter, r *http.Request) {
		// The service ends the connection after a long answer of
		// unknown length: the client must get all of it, then the end.
		w.Header().Set("Connection", "close")
		w.(http.Flusher).Flush()
		io.WriteString(w, strings.Repeat("x", 1<<20))
	})
	var held atomic.Int32
	srv := joinFront(t, addr, &held)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: demo\r\n\r\n", path)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s body: %v", path, err)
		}
		return resp, string(b)
	}
	if _, body := get("/"); body != `xff="127.0.0.1"` {
		t.Fatalf("first request: %s", body)
	}
	if _, body := get("/"); body != `xff=""` || held.Load() != 1 {
		t.Fatalf("second request (joined: no X-Forwarded-For): %s, %d holds", body, held.Load())
	}
	resp, body := get("/bye")
	if len(body) != 1<<20 || !resp.Close {
		t.Fatalf("the service's last answer: %d bytes, close %v", len(body), resp.Close)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the service's end: %d %v, want EOF", n, err)
	}
	// The pair is gone, and with it the hold on the sandbox.
	for deadline := time.Now().Add(30 * time.Second); held.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d holds left after the connection ended", held.Load())
		}
	}
}
