package sandbox

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startAgentServer serves handler on a unix socket and counts the
// connections made to it.
func startAgentServer(t *testing.T, handler http.HandlerFunc, idle time.Duration) (string, *atomic.Int32) {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := &http.Server{Handler: handler, IdleTimeout: idle, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return socket, &conns
}

func directCall(ctx context.Context, rt http.RoundTripper, method, path, body string) (string, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return "", err
	}
	return readAnswer(rt, req)
}

// readAnswer sends req through rt and reads the whole answer.
func readAnswer(rt http.RoundTripper, req *http.Request) (string, error) {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	return string(got), err
}

// echo answers a call with its method, path and body.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	switch r.URL.Path {
	case "/close":
		w.Header().Set("Connection", "close")
	case "/big-header":
		w.Header().Set("X-Big", strings.Repeat("x", maxAgentHeaderBytes))
	case "/slow":
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	case "/long":
		io.WriteString(w, strings.Repeat("y", 1<<20))
	case "/empty":
		w.WriteHeader(http.StatusNoContent)
		return
	}
	io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
}

// TestAgentDirectCallsShareOneConnection: calls sent whole (no body or a
// small one) and read to their end take turns on one connection, made in
// the caller's goroutine; an answer that says it closes, one whose body
// was not read to its end, and a renewed link each leave it for a new
// one.
func TestAgentDirectCallsShareOneConnection(t *testing.T) {
	conns := newAgentConns()
	defer conns.close()
	socket, accepted := startAgentServer(t, echo, time.Minute)
	link := conns.link(socket)
	ctx := context.Background()
	for i := range 5 {
		for _, c := range []struct{ method, path, body, want string }{
			{"GET", "/env", "", "GET /env "},
			{"POST", "/exec", `{"command":"true"}`, `POST /exec {"command":"true"}`},
			{"GET", "/empty", "", ""},
		} {
			if got, err := directCall(ctx, link, c.method, c.path, c.body); err != nil || got != c.want {
				t.Fatalf("round %d: %s %s: %q, %v; want %q", i, c.method, c.path, got, err, c.want)
			}
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("15 calls in a row made %d connections, want 1", n)
	}
	if _, err := directCall(ctx, link, "GET", "/close", ""); err != nil {
		t.Fatal(err)
	}
	directCall(ctx, link, "GET", "/env", "")
	if n := accepted.Load(); n != 2 {
		t.Fatalf("after an answer that closes: %d connections, want 2", n)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://agent/long", nil)
	resp, err := link.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close()
	directCall(ctx, link, "GET", "/env", "")
	if n := accepted.Load(); n != 3 {
		t.Fatalf("after a body closed before its end: %d connections, want 3", n)
	}
	link.renew()
	directCall(ctx, link, "GET", "/env", "")
	if n := accepted.Load(); n != 4 {
		t.Fatalf("after a renewal: %d connections, want 4", n)
	}
	link.close()
	_, err = directCall(ctx, link, "GET", "/env", "")
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || !errors.Is(err, errAgentGone) {
		t.Errorf("call through a closed link: %v, want a dial error", err)
	}
}

// TestAgentDirectCallsKeepTheTransportsBounds: headers past the bound
// fail the call; the caller's context ends a wait for the answer at once;
// a streamed body and an upgrade take the transport.
func TestAgentDirectCallsKeepTheTransportsBounds(t *testing.T) {
	conns := newAgentConns()
	defer conns.close()
	socket, accepted := startAgentServer(t, echo, time.Minute)
	link := conns.link(socket)
	if _, err := directCall(context.Background(), link, "GET", "/big-header", ""); err == nil {
		t.Error("an answer with headers past the bound was read")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := directCall(ctx, link, "POST", "/slow", "{}")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("a call whose context ended: %v after %v, want the context's error at once", err, time.Since(start))
	}
	before := accepted.Load()
	if got, err := directCall(context.Background(), link, "GET", "/env", ""); err != nil || got != "GET /env " {
		t.Fatalf("the call after a cancelled one: %q, %v", got, err)
	}
	if n := accepted.Load(); n != before+1 {
		t.Errorf("a connection whose call was cancelled was used again (%d connections, want %d)", n, before+1)
	}
	streamed, _ := http.NewRequest("POST", "http://agent/x", io.NopCloser(strings.NewReader("a")))
	upgrade, _ := http.NewRequest("GET", "http://agent/x", nil)
	upgrade.Header.Set("Upgrade", "websocket")
	large, _ := http.NewRequest("POST", "http://agent/x", strings.NewReader(strings.Repeat("z", maxAgentDirectBody+1)))
	for _, req := range []*http.Request{streamed, upgrade, large} {
		if agentDirect(req) {
			t.Errorf("%s with length %d and upgrade %q would be sent directly", req.Method, req.ContentLength, req.Header.Get("Upgrade"))
		}
	}
}

// TestAgentDirectCallAfterTheAgentClosedItsConnection: a pooled
// connection the agent closed while it was idle is replaced, and the
// call (a POST, which the agent never got) is sent on a new one.
func TestAgentDirectCallAfterTheAgentClosedItsConnection(t *testing.T) {
	conns := newAgentConns()
	defer conns.close()
	socket, accepted := startAgentServer(t, echo, 20*time.Millisecond)
	link := conns.link(socket)
	for i := range 3 {
		if got, err := directCall(context.Background(), link, "POST", "/exec", "{}"); err != nil || got != "POST /exec {}" {
			t.Fatalf("call %d: %q, %v", i, got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := accepted.Load(); n != 3 {
		t.Errorf("%d connections for 3 calls each after the agent closed the last one, want 3", n)
	}
}
