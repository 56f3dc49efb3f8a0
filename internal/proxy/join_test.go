package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
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
	p := New(Options{JoinConnections: true, Log: debugLogOnFailure(t), Dial: func(ctx context.Context, id string, port int) (net.Conn, error) {
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
		}, Recheck: func(r *http.Request) (Request, bool) {
			// As the preview path: the same host only; the key is kept
			// from the service.
			return Request{SandboxID: "demo", Port: 8080, Host: r.Host, Scheme: "http",
				StripAuthorization: r.Header.Get("Authorization") == "Bearer key"}, r.Host == "demo"
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

// A client that half-closes its connection after a request on a joined
// connection still gets the whole answer: its end of stream reaches the
// service after the request, as it does on a direct connection. (The
// kernel once sent the end to the service's socket as a send of no
// bytes, which failed it: the pair was cut and the answer lost.)
func TestJoinedConnectionsAnswerAClientThatHalfClosed(t *testing.T) {
	addr, mux := backend(t)
	answer := strings.Repeat("y", 256<<10)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			io.WriteString(w, "joined") // small enough to join after
			return
		}
		if r.URL.Path == "/late" {
			time.Sleep(100 * time.Millisecond) // the client's end comes first
		}
		a := answer
		if r.URL.Path == "/queued" {
			a = strings.Repeat(a, 16) // more than the sockets hold
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(a)))
		io.WriteString(w, a)
	})
	var held atomic.Int32
	srv := joinFront(t, addr, &held)
	// queued: the client's end comes while the answer waits in the
	// kernel's queue for the client's socket.
	for _, path := range []string{"/now", "/late", "/queued"} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			waitHolds(t, &held, 0)
			c, err := net.DialTCP("tcp", nil, srv.Listener.Addr().(*net.TCPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			get := func(path string) string {
				t.Helper()
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: demo\r\n\r\n", path)
				if path == "/queued" {
					time.Sleep(200 * time.Millisecond)
				}
				if path != "/first" {
					c.CloseWrite()
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("GET %s: %v", path, err)
				}
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatalf("GET %s: %d bytes, %v", path, len(b), err)
				}
				return string(b)
			}
			if got := get("/first"); got != "joined" || held.Load() != 1 {
				t.Fatalf("first request: %q, %d holds (want 1: joined)", got, held.Load())
			}
			want := len(answer)
			if path == "/queued" {
				want *= 16
			}
			if got := get(path); len(got) != want {
				t.Fatalf("GET %s after the client's end: %d bytes of %d", path, len(got), want)
			}
			if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("after the answer: %d %v, want EOF", n, err)
			}
			waitHolds(t, &held, 0)
		})
	}
}

// A client that resets its joined connection while an answer is on its
// way ends the pair at once: nothing more can reach it, and the sandbox
// is let go. (A reset after the client's own end of stream was taken for
// that end again and ignored; the service's end then waited for bytes
// the reset socket would never send, until the idle cut a minute later.)
func TestJoinedConnectionsEndAtOnceWhenTheClientResets(t *testing.T) {
	addr, mux := backend(t)
	answer := strings.Repeat("z", 4<<20) // more than the sockets hold
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			io.WriteString(w, "joined") // small enough to join after
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(answer)))
		io.WriteString(w, answer)
	})
	var held atomic.Int32
	srv := joinFront(t, addr, &held)
	for _, halfClosed := range []bool{false, true} {
		t.Run(map[bool]string{false: "reset", true: "half-closed-then-reset"}[halfClosed], func(t *testing.T) {
			waitHolds(t, &held, 0)
			c, br := dialJoined(t, srv, &held)
			fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: demo\r\n\r\n")
			if halfClosed {
				c.CloseWrite()
			}
			if _, err := io.ReadFull(br, make([]byte, 64<<10)); err != nil {
				t.Fatalf("the answer's start: %v", err)
			}
			c.SetLinger(0)
			c.Close() // a reset: the rest of the answer is unread
			start := time.Now()
			for deadline := start.Add(10 * time.Second); held.Load() != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the pair still holds the sandbox %v after the client's reset", time.Since(start).Round(time.Millisecond))
				}
			}
		})
	}
}

// A service that resets its joined connection right after an answer
// (it closed with bytes of the client's unread) has ended its stream: the
// client still gets the whole answer, then the end. (Unlike the client's
// socket, whose error ends the pair at once: the answer was sent before
// the reset, and is on its way to the client.)
func TestJoinedConnectionsPassOnAnAnswerTheServiceResetAfter(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	answer := strings.Repeat("r", 32<<20) // more than the sockets hold
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if r.URL.Path == "/first" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\njoined")
				continue
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(answer), answer)
			c.(*net.TCPConn).SetLinger(0)
			return // a reset
		}
	}()
	var held atomic.Int32
	srv := joinFront(t, ln.Addr().String(), &held)
	c, br := dialJoined(t, srv, &held)
	fmt.Fprintf(c, "GET /last HTTP/1.1\r\nHost: demo\r\n\r\n")
	time.Sleep(200 * time.Millisecond) // the reset comes while most of the answer waits
	if got := readAnswer(t, br, "the answer before the reset"); len(got) != len(answer) {
		t.Fatalf("the answer before the reset: %d bytes of %d", len(got), len(answer))
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the answer: %d %v, want EOF", n, err)
	}
	waitHolds(t, &held, 0)
}

// A request the kernel kept for the daemon behind an answer still queued
// for the client's socket is served even when the client's end of stream
// came before it could be read: the kernel hands a kept buffer to the
// socket's readers only after the answer went out, and a read meanwhile
// returns the end at once (the socket's receive side is shut).
func TestJoinedConnectionsServeAKeptRequestAfterTheClientsEnd(t *testing.T) {
	addr, mux := backend(t)
	answer := strings.Repeat("k", 32<<20) // more than the sockets hold
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/first":
			io.WriteString(w, "joined") // small enough to join after
		case "/big":
			w.Header().Set("Content-Length", fmt.Sprint(len(answer)))
			io.WriteString(w, answer)
		default:
			fmt.Fprintf(w, "%s xff=%q auth=%q", r.URL.Path, r.Header.Get("X-Forwarded-For"), r.Header.Get("Authorization"))
		}
	})
	var held atomic.Int32
	srv := joinFront(t, addr, &held)
	c, br := dialJoined(t, srv, &held)
	// The answer fills the sockets; the kept request waits behind what
	// is left of it, and the client's end comes before it is read.
	fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: demo\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	fmt.Fprintf(c, "GET /kept HTTP/1.1\r\nHost: demo\r\nAuthorization: Bearer key\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	c.CloseWrite()
	time.Sleep(200 * time.Millisecond)
	if got := readAnswer(t, br, "the queued answer"); len(got) != len(answer) {
		t.Fatalf("the queued answer: %d bytes of %d", len(got), len(answer))
	}
	if got, want := readAnswer(t, br, "the kept request's answer"), `/kept xff="127.0.0.1" auth=""`; got != want {
		t.Errorf("the kept request: service saw %s, want %s", got, want)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the answers: %d %v, want EOF", n, err)
	}
	waitHolds(t, &held, 0)
}

// dialJoined opens a connection to srv whose first request, GET /first,
// the service answers with "joined", and checks that it was joined.
func dialJoined(t *testing.T, srv *httptest.Server, held *atomic.Int32) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, srv.Listener.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /first HTTP/1.1\r\nHost: demo\r\n\r\n")
	if got := readAnswer(t, br, "first request"); got != "joined" || held.Load() != 1 {
		t.Fatalf("first request: %q, %d holds (want 1: joined)", got, held.Load())
	}
	return c, br
}

// readAnswer reads an answer's body from br.
func readAnswer(t *testing.T, br *bufio.Reader, what string) string {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: %d bytes, %v", what, len(b), err)
	}
	return string(b)
}

// waitHolds waits until the holds the proxy took on the sandbox and has
// not released are n.
func waitHolds(t *testing.T, held *atomic.Int32, n int32) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); held.Load() != n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d holds left, want %d", held.Load(), n)
		}
	}
}

// debugLogOnFailure is a debug-level logger whose lines the test prints
// if it fails: why a joined connection was cut, say.
func debugLogOnFailure(t *testing.T) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if t.Failed() {
			t.Logf("the proxy's log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A joined connection's requests that need the daemon are served by it,
// checked and rewritten as on the ordinary path, on the same connection;
// one for another host ends the connection without reaching the service.
func TestJoinedConnectionsDivertWhatNeedsTheDaemon(t *testing.T) {
	addr, mux := backend(t)
	var seen atomic.Int32
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s xff=%q auth=%q host=%s body=%d", r.URL.Path, r.Header.Get("X-Forwarded-For"), r.Header.Get("Authorization"), r.Host, len(body))
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
	do := func(writes ...string) string {
		t.Helper()
		for i, w := range writes {
			if i > 0 {
				time.Sleep(50 * time.Millisecond) // separate buffers
			}
			io.WriteString(c, w)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", writes, err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	get := "GET /%s HTTP/1.1\r\nHost: demo\r\n%s\r\n"
	for _, step := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"first", []string{fmt.Sprintf(get, "1", "")}, `/1 xff="127.0.0.1" auth="" host=demo body=0`},
		{"joined", []string{fmt.Sprintf(get, "2", "")}, `/2 xff="" auth="" host=demo body=0`},
		{"app's own Authorization", []string{fmt.Sprintf(get, "3", "Authorization: Basic app\r\n")}, `/3 xff="127.0.0.1" auth="Basic app" host=demo body=0`},
		{"the key and X-Forwarded-For", []string{fmt.Sprintf(get, "4", "Authorization: Bearer key\r\nX-Forwarded-For: 203.0.113.9\r\n")}, `/4 xff="127.0.0.1" auth="" host=demo body=0`},
		{"a plain one after", []string{fmt.Sprintf(get, "5", "")}, `/5 xff="127.0.0.1" auth="" host=demo body=0`},
		{"a body", []string{"POST /6 HTTP/1.1\r\nHost: demo\r\nContent-Length: 3\r\n\r\nabc"}, `/6 xff="127.0.0.1" auth="" host=demo body=3`},
	} {
		if got := do(step.writes...); got != step.want {
			t.Errorf("%s: service saw %s, want %s", step.name, got, step.want)
		}
	}
	before := seen.Load()
	fmt.Fprintf(c, "GET /7 HTTP/1.1\r\nHost: other\r\n\r\n")
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("another host on a joined connection: %d bytes, %v; want its end", n, err)
	}
	if seen.Load() != before {
		t.Errorf("the request for another host reached the service")
	}

	// A header split across two writes is caught.
	c2, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c, br = c2, bufio.NewReader(c2)
	c.SetDeadline(time.Now().Add(time.Minute))
	do(fmt.Sprintf(get, "1", ""))
	do(fmt.Sprintf(get, "2", ""))
	split := fmt.Sprintf(get, "3", "Authorization: Bearer key\r\n")
	cut := strings.Index(split, "Author") + 6
	if got, want := do(split[:cut], split[cut:]), `/3 xff="127.0.0.1" auth="" host=demo body=0`; got != want {
		t.Errorf("split header: service saw %s, want %s", got, want)
	}
	c2.Close()
	for deadline := time.Now().Add(30 * time.Second); held.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d holds left after the connections ended", held.Load())
		}
	}
}
