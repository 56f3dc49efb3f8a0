package proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandboxd/sandboxd/api/fullduplex/fullduplextest"
)

// backend is a service "in a sandbox": the proxy reaches it through the
// dial function, which here dials loopback.
func backend(t *testing.T) (addr string, mux *http.ServeMux) {
	t.Helper()
	mux = http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), mux
}

// front serves the proxy for sandbox "demo" port 8080, mapped to addr.
func front(t *testing.T, addr string, req Request) *httptest.Server {
	t.Helper()
	p := New(Options{Dial: func(ctx context.Context, id string, port int) (net.Conn, error) {
		if id != "demo" || port != 8080 {
			return nil, fmt.Errorf("dialled %s:%d", id, port)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}})
	t.Cleanup(p.Close)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rq := req
		rq.SandboxID, rq.Port = "demo", 8080
		if rq.Host == "" {
			rq.Host = r.Host
		}
		p.Serve(w, r, rq, func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
		})
	}))
	srv.Config.ErrorLog = fullduplextest.ErrorLog(t)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestProxyMethodsAndHeaders(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Got-Host", r.Host)
		w.Header().Set("X-Got-XFF", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Got-XFH", r.Header.Get("X-Forwarded-Host"))
		w.Header().Set("X-Got-XFP", r.Header.Get("X-Forwarded-Proto"))
		w.Header().Set("X-Got-Auth", r.Header.Get("Authorization"))
		w.Header().Set("X-Got-Cookie", strings.Join(r.Header.Values("Cookie"), "|"))
		w.Header().Set("X-Got-Custom", r.Header.Get("X-Custom"))
		fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.RequestURI(), body)
	})
	srv := front(t, addr, Request{Scheme: "https", StripAuthorization: true})
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "HEAD"} {
		req, _ := http.NewRequest(m, srv.URL+"/a/b?x=1&y=%20", strings.NewReader("body-"+m))
		req.Host = "8080-demo-tok.localhost"
		req.Header.Set("X-Forwarded-For", "6.6.6.6") // spoofed: replaced
		req.Header.Set("X-Forwarded-Host", "evil")
		req.Header.Set("Authorization", "Bearer api-token")
		req.Header.Set("Cookie", "a=1; sandboxd_preview=secret; b=2")
		req.Header.Set("X-Custom", "kept")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h := resp.Header
		if h.Get("X-Method") != m {
			t.Errorf("%s: backend saw %q", m, h.Get("X-Method"))
		}
		if m != "HEAD" && string(body) != m+" /a/b?x=1&y=%20 body-"+m {
			t.Errorf("%s: body %q", m, body)
		}
		want := map[string]string{
			"X-Got-Host": "8080-demo-tok.localhost", "X-Got-XFF": "127.0.0.1", "X-Got-XFH": "8080-demo-tok.localhost",
			"X-Got-XFP": "https", "X-Got-Auth": "", "X-Got-Cookie": "a=1; b=2", "X-Got-Custom": "kept",
		}
		for k, v := range want {
			if got := h.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", m, k, got, v)
			}
		}
	}
}

func TestProxyTrustedForwardedHeaders(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s|%s|%s|%s|%s", r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Host"),
			r.Header.Get("X-Forwarded-Proto"), r.URL.Path)
	})
	srv := front(t, addr, Request{TrustForwarded: true, Host: "app.example.com", Path: "/rewritten", Scheme: "http"})
	req, _ := http.NewRequest("GET", srv.URL+"/ignored", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Forwarded-Host", "app.example.com")
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "app.example.com|203.0.113.9, 127.0.0.1|app.example.com|https|/rewritten"; string(body) != want {
		t.Errorf("got %q, want %q", body, want)
	}
}

func TestProxyStreamsLargeBodiesBothWays(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		io.Copy(w, r.Body)
	})
	srv := front(t, addr, Request{})
	const size = 64 << 20
	src := io.LimitReader(rngReader{}, size)
	h := sha256.New()
	resp, err := http.Post(srv.URL+"/echo", "application/octet-stream", io.TeeReader(src, h))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h2 := sha256.New()
	n, err := io.Copy(h2, resp.Body)
	if err != nil || n != size {
		t.Fatalf("echoed %d bytes, %v", n, err)
	}
	if string(h.Sum(nil)) != string(h2.Sum(nil)) {
		t.Error("echoed bytes differ")
	}
}

type rngReader struct{}

func (rngReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i*7 + i>>8)
	}
	return len(p), nil
}

func TestProxyEventStreamIsNotBuffered(t *testing.T) {
	addr, mux := backend(t)
	release := make(chan struct{})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprint(w, "data: second\n\n")
	})
	srv := front(t, addr, Request{})
	defer close(release)
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(resp.Body).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		if l != "data: first\n" {
			t.Errorf("first line %q", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first event did not arrive while the stream was open")
	}
}

func TestProxyWebSocket(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			c.Write(r.Context(), typ, append([]byte("echo:"), data...))
		}
	})
	srv := front(t, addr, Request{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("hello %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("read %q %v", got, err)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
}

func TestProxyPassesRedirectsBack(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new", http.StatusFound)
	})
	srv := front(t, addr, Request{})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/old")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/new" {
		t.Errorf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestProxyReportsUnreachableService(t *testing.T) {
	srv := front(t, closedAddr(t), Request{})
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "refused") {
		t.Errorf("got %d %q", resp.StatusCode, body)
	}
}

// A call whose body the service left unread (it could not be reached, or
// answered first) is answered on a connection that stays usable, even
// when the body arrives after the answer began. With full duplex the HTTP/1
// server read such a body's end after it stopped watching the connection,
// and the next request panicked it ("invalid concurrent Body.Read call",
// golang/go#68560; front's panicCheck), which dropped the connection.
func TestProxyUnreadBodyKeepsTheConnection(t *testing.T) {
	early, mux := backend(t)
	mux.Handle("/", fullduplextest.AnswerFirst)
	for name, addr := range map[string]string{"refused": closedAddr(t), "answered first": early} {
		t.Run(name, func(t *testing.T) {
			srv := front(t, addr, Request{})
			fullduplextest.KeepsConnection(t, srv.Listener.Addr().String(),
				"POST /upload HTTP/1.1\r\nHost: x", "a body the service never reads", "GET / HTTP/1.1\r\nHost: x")
		})
	}
}

// A client that stalls the rest of a body the service left unread holds
// the request (its in-flight slot, the sandbox) for UnreadBodyWait only:
// then its connection is closed, and the rest is never read as a request.
func TestProxyBoundsAStalledUnreadBody(t *testing.T) {
	early, mux := backend(t)
	mux.Handle("/", fullduplextest.AnswerFirst)
	const wait = 300 * time.Millisecond
	for name, addr := range map[string]string{"refused": closedAddr(t), "answered first": early} {
		t.Run(name, func(t *testing.T) {
			p := New(Options{Limits: Limits{UnreadBodyWait: wait}, Dial: func(ctx context.Context, id string, port int) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			}})
			t.Cleanup(p.Close)
			var serving atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				serving.Add(1)
				defer serving.Add(-1)
				p.Serve(w, r, Request{SandboxID: "demo", Port: 8080, Host: r.Host}, func(w http.ResponseWriter, r *http.Request, err error) {
					http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
				})
			}))
			srv.Config.ErrorLog = fullduplextest.ErrorLog(t)
			srv.Start()
			t.Cleanup(srv.Close)
			fullduplextest.ClosesStalledBody(t, srv.Listener.Addr().String(), "POST /upload HTTP/1.1\r\nHost: x", wait)
			if n := serving.Load(); n != 0 {
				t.Errorf("%d requests still served after their connection closed", n)
			}
		})
	}
}

func TestStripCookie(t *testing.T) {
	h := http.Header{}
	h.Add("Cookie", "sandboxd_preview=x")
	h.Add("Cookie", "a=1;sandboxd_preview=y; b=2")
	stripCookie(h, CookieName)
	if got := strings.Join(h.Values("Cookie"), "|"); got != "a=1; b=2" {
		t.Errorf("got %q", got)
	}
}

// TestProxyBoundsUpstreamAnswers: a service cannot make the proxy hold
// more than MaxHeaderBytes of headers or wait for them longer than
// HeaderTimeout; what it gets instead is an error that says which.
func TestProxyBoundsUpstreamAnswers(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Huge", strings.Repeat("x", 1<<20))
		w.Write([]byte("never seen"))
	})
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Fine", strings.Repeat("y", 16<<10))
		w.Write([]byte("ok"))
	})
	p := New(Options{
		Dial: func(ctx context.Context, id string, port int) (net.Conn, error) {
			if port != 8080 {
				return nil, fmt.Errorf("connection refused")
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
		Limits: Limits{HeaderTimeout: 300 * time.Millisecond},
	})
	t.Cleanup(p.Close)
	serve := func(path string, port int) (int, error) {
		var got error
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "http://8080-demo-tok.localhost"+path, nil)
		p.Serve(rec, r, Request{SandboxID: "demo", Port: port, Host: r.Host}, func(w http.ResponseWriter, r *http.Request, err error) {
			got = err
			w.WriteHeader(http.StatusBadGateway)
		})
		return rec.Code, got
	}
	if code, err := serve("/ok", 8080); code != 200 || err != nil {
		t.Errorf("16 KiB of headers: %d %v", code, err)
	}
	code, err := serve("/huge", 8080)
	var dialErr *DialError
	var netErr net.Error
	if code != http.StatusBadGateway || err == nil || errors.As(err, &dialErr) || (errors.As(err, &netErr) && netErr.Timeout()) {
		t.Errorf("1 MiB of headers: %d %v", code, err)
	}
	if code, err := serve("/hang", 8080); code != http.StatusBadGateway || !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Errorf("no headers: %d %v, want a timeout", code, err)
	}
	if code, err := serve("/ok", 9999); code != http.StatusBadGateway || !errors.As(err, &dialErr) {
		t.Errorf("nothing listening: %d %v, want a DialError", code, err)
	}
}

func TestProxyAdmitsBoundedRequests(t *testing.T) {
	p := New(Options{Dial: nil, Limits: Limits{MaxInFlightPerSandbox: 2, MaxInFlight: 3}})
	a1, err1 := p.Admit("a")
	_, err2 := p.Admit("a")
	if err1 != nil || err2 != nil {
		t.Fatalf("first two: %v %v", err1, err2)
	}
	if _, err := p.Admit("a"); !errors.Is(err, ErrBusy) {
		t.Errorf("third for one sandbox: %v, want ErrBusy", err)
	}
	b1, err := p.Admit("b")
	if err != nil {
		t.Fatalf("another sandbox: %v", err)
	}
	if _, err := p.Admit("c"); !errors.Is(err, ErrBusy) {
		t.Errorf("fourth in all: %v, want ErrBusy", err)
	}
	a1()
	a1() // releasing twice frees one slot only
	if _, err := p.Admit("c"); err != nil {
		t.Errorf("after a release: %v", err)
	}
	if _, err := p.Admit("c"); !errors.Is(err, ErrBusy) {
		t.Errorf("a double release freed two slots: %v", err)
	}
	b1()
	if n := len(p.inFlight.per); n != 2 {
		t.Errorf("%d sandboxes counted, want 2 (a and c)", n)
	}
}

// TestProxyDirectPathPoolsConnections: GETs take the direct path, which
// reuses one connection per sandbox port for requests in a row and, when
// the service closed an idle one, sends the request again on a new one.
func TestProxyDirectPathPoolsConnections(t *testing.T) {
	addr, mux := backend(t)
	mux.HandleFunc("/who", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "not forwarded")
		fmt.Fprintf(w, "%s %s %q", r.RemoteAddr, r.Header.Get("X-Forwarded-For"), r.Header.Get("Authorization"))
	})
	// /bye answers as if the connection stayed open, then closes it.
	mux.HandleFunc("/bye", func(w http.ResponseWriter, r *http.Request) {
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye")
		bw.Flush()
		c.Close()
	})
	var dials int
	p := New(Options{Dial: func(ctx context.Context, id string, port int) (net.Conn, error) {
		dials++
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}})
	t.Cleanup(p.Close)
	get := func(path string) (string, http.Header) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "http://8080-demo-tok.localhost"+path, nil)
		r.Header.Set("Authorization", "Bearer secret")
		p.Serve(rec, r, Request{SandboxID: "demo", Port: 8080, Host: r.Host, StripAuthorization: true}, func(w http.ResponseWriter, r *http.Request, err error) {
			t.Errorf("proxy error: %v", err)
		})
		if rec.Code != 200 {
			t.Fatalf("status %d", rec.Code)
		}
		return rec.Body.String(), rec.Header()
	}
	first, h := get("/who")
	if !strings.HasSuffix(first, ` 192.0.2.1 ""`) || h.Get("X-Hop") != "" {
		t.Errorf("first answer %q, headers %v: want X-Forwarded-For of the client, no Authorization, no hop header", first, h)
	}
	if second, _ := get("/who"); second != first || dials != 1 {
		t.Errorf("second answer %q after %d dials, want %q over the same connection", second, dials, first)
	}
	if bye, _ := get("/bye"); bye != "bye" || dials != 1 {
		t.Errorf("/bye: %q after %d dials", bye, dials)
	}
	if third, _ := get("/who"); third == first || dials != 2 {
		t.Errorf("after the connection broke: %q after %d dials, want a new connection", third, dials)
	}
}
