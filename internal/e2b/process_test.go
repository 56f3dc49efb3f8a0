package e2b

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// TestCommandsKeepTheirConnection: a command's relay reads sandboxd's
// log stream to its end, past the exit event, so that the next command
// reuses the connection to the daemon's API instead of dialling anew;
// and the command's own answer does not wait for that end. The daemon's
// API is a hand-written fake here: the start-and-stream call answers a
// process_info and an exit event, then ends a moment later.
func TestCommandsKeepTheirConnection(t *testing.T) {
	// The stream ends when the test lets it, once the command answered;
	// an answer that waited for the end would come after heldEnd.
	const heldEnd = 20 * time.Second
	var conns atomic.Int32
	release, ended := make(chan struct{}, 1), make(chan struct{}, 1)
	// The stream's end comes apart from the exit event, as through the
	// daemon's in-memory connection (a net.Pipe passes each write on its
	// own).
	api := fakeCommandAPI(func() {
		select {
		case <-release:
		case <-time.After(heldEnd):
		}
		ended <- struct{}{}
	})
	api.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	api.Start()
	defer api.Close()
	s, id := newServerWithSandbox(t, api.URL)
	for i := range 3 {
		r := startTrue(s, id)
		w := httptest.NewRecorder()
		began := time.Now()
		s.ServeHTTP(w, r)
		if took := time.Since(began); took >= heldEnd {
			t.Errorf("command %d answered after %v: it waited for its stream's end", i, took)
		}
		release <- struct{}{}
		// The stream's end, then a moment for the relay (a goroutine of
		// its own) to read it and hand the connection back: 100 ms was
		// too short at load 25 while the unit packages ran, and the next
		// command dialled anew.
		<-ended
		time.Sleep(time.Second)
		if got := w.Body.String(); !strings.Contains(got, `"exitCode":0`) || !strings.Contains(got, `"pid":42`) {
			t.Fatalf("command %d: %q", i, got)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 commands made %d connections to the daemon's API, want 1", n)
	}
}

// fakeCommandAPI is a hand-written fake of the daemon's API for a
// command: its start-and-stream call answers a process_info and an exit
// event, then calls atEnd before the stream ends.
func fakeCommandAPI(atEnd func()) *httptest.Server {
	return httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/processes/start/stream") {
			http.NotFound(w, r)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		sw := sse.NewWriter(w)
		code := 0
		p := &api.Process{ID: "e2b-1", PID: 42, Status: api.ProcessRunning}
		sw.Send(api.EventProcessInfo, api.ProcessEvent{Type: api.EventProcessInfo, Process: p})
		done := *p
		done.Status, done.ExitCode = api.ProcessCompleted, &code
		sw.Send(api.EventExit, api.ProcessEvent{Type: api.EventExit, Process: &done, ExitCode: &code, Status: api.ProcessCompleted})
		atEnd()
	}))
}

// startTrue is the SDK's commands.run('true') to sandbox id of s.
func startTrue(s *Server, id string) *http.Request {
	body := envelope(0, `{"process":{"cmd":"/bin/bash","args":["-l","-c","true"]},"stdin":false}`)
	r := httptest.NewRequest("POST", Prefix+"/process.Process/Start", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/connect+json")
	r.Header.Set("E2b-Sandbox-Id", id)
	r.Header.Set("X-Access-Token", s.table.token("envd", id))
	return r
}

// TestCommandEndsInOneWrite: a command's answer reaches the SDK in two
// writes: the response's headers with the start event, then the end
// event, the end of the stream and the response's end together (the SDK
// reads each write as a chunk, and each chunk costs it a turn of its web
// streams).
func TestCommandEndsInOneWrite(t *testing.T) {
	upstream := fakeCommandAPI(func() {})
	upstream.Start()
	defer upstream.Close()
	s, id := newServerWithSandbox(t, upstream.URL)
	front := httptest.NewUnstartedServer(s)
	writes := &writeCounter{Listener: front.Listener}
	front.Listener = writes
	front.Start()
	defer front.Close()
	r := startTrue(s, id)
	req, err := http.NewRequest(r.Method, front.URL+r.URL.Path, r.Body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = r.Header
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Contains(body, []byte(`"exitCode":0`)) || !bytes.HasSuffix(body, envelope(flagEndStream, "{}")) {
		t.Fatalf("answer %q, %v", body, err)
	}
	if n := writes.n.Load(); n != 2 {
		t.Errorf("the answer took %d writes, want 2 (headers and start; end, end of stream and the response's end)", n)
	}
}

// writeCounter counts the writes to its connections.
type writeCounter struct {
	net.Listener
	n atomic.Int32
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, n: &l.n}, nil
}

type countedConn struct {
	net.Conn
	n *atomic.Int32
}

func (c *countedConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// newServerWithSandbox is an E2B server in front of the sandboxd API at
// apiURL, with one sandbox ("sbx-1") that has an hour to live.
func newServerWithSandbox(t *testing.T, apiURL string) (*Server, string) {
	t.Helper()
	s, err := New(Options{Transport: http.DefaultTransport, BaseURL: apiURL, Token: "t", StateDir: t.TempDir(),
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	const id = "sbx-1"
	if _, _, err := s.table.update(id, true, func(e *entry) { e.EndAt = time.Now().Add(time.Hour) }); err != nil {
		t.Fatal(err)
	}
	return s, id
}

// TestKeepaliveStopsAtOnce: a stream gets a keepalive after each
// Keepalive-Ping-Interval of silence; stop returns without waiting for
// anything, and no keepalive is written after it.
func TestKeepaliveStopsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := httptest.NewRequest("POST", "/process.Process/Start", nil)
		r.Header.Set("Keepalive-Ping-Interval", "2")
		w := httptest.NewRecorder()
		sw := newStreamWriter(w)
		body := func() string {
			sw.mu.Lock()
			defer sw.mu.Unlock()
			return w.Body.String()
		}
		one := string(envelope(0, `{"event":{"keepalive":{}}}`))
		stop := keepalive(r, sw, func() any { return eventMessage{Event: processEvent{Keepalive: &struct{}{}}} })
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := body(); got != one+one {
			t.Fatalf("after 5 s at 2 s: %q, want two keepalives", got)
		}
		stop()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := body(); got != one+one {
			t.Fatalf("after stop: %q, want nothing more", got)
		}
	})
}
