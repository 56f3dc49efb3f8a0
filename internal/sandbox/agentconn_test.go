package sandbox

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// fakeAgent answers every call with its name and the Host header it got,
// and counts the connections made to it.
type fakeAgent struct {
	socket string
	conns  atomic.Int32
}

func startFakeAgent(t *testing.T, name string) *fakeAgent {
	t.Helper()
	a := &fakeAgent{socket: filepath.Join(t.TempDir(), "agent.sock")}
	ln, err := net.Listen("unix", a.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, name+" "+r.Host)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				a.conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

func callAgent(t *testing.T, rt http.RoundTripper, host string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://"+host+"/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	return readAnswer(rt, req)
}

// TestAgentLinksShareOneTransport: links of one agentConns reach each
// their own agent, whatever URL host a call carries, with the Host header
// the caller set; a renewed link makes a new connection; a closed link's
// calls fail as dial errors, which the API's retry counts as not
// connected.
func TestAgentLinksShareOneTransport(t *testing.T) {
	conns := newAgentConns()
	defer conns.close()
	a, b := startFakeAgent(t, "a"), startFakeAgent(t, "b")
	la, lb := conns.link(a.socket), conns.link(b.socket)
	if la.Host() == lb.Host() {
		t.Fatalf("two links share the host %q", la.Host())
	}
	for range 3 {
		for _, c := range []struct {
			link *agentLink
			host string
			want string
		}{
			{la, "agent", "a agent"},
			{lb, "agent", "b agent"},
			{la, la.Host(), "a " + la.Host()},
			{lb, la.Host(), "b " + la.Host()},
		} {
			got, err := callAgent(t, c.link, c.host)
			if err != nil || got != c.want {
				t.Errorf("call to %s through %s: %q, %v; want %q", c.host, c.link.Host(), got, err, c.want)
			}
		}
	}
	if n := a.conns.Load(); n != 1 {
		t.Errorf("agent a got %d connections for 6 calls in a row, want 1", n)
	}
	la.renew()
	if _, err := callAgent(t, la, "agent"); err != nil {
		t.Fatal(err)
	}
	if n := a.conns.Load(); n != 2 {
		t.Errorf("after a renewal agent a has had %d connections, want 2", n)
	}
	lb.close()
	_, err := callAgent(t, lb, "agent")
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" || !errors.Is(err, errAgentGone) {
		t.Errorf("call through a closed link: %v, want a dial error", err)
	}
	if _, err := la.dial(context.Background()); err != nil {
		t.Errorf("dialing a live link: %v", err)
	}
}
