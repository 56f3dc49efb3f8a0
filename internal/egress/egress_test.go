package egress

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/sandboxd/sandboxd/internal/network"
)

// fakePolicies is one sandbox at 127.0.0.1 with a policy, recording what
// the forwarder opened.
type fakePolicies struct {
	e        network.Egress
	mu       sync.Mutex
	resolved map[string][]netip.Addr
}

func (f *fakePolicies) PolicyFor(src netip.Addr) (string, network.Egress, bool) {
	return "k", f.e, src == netip.MustParseAddr("127.0.0.1")
}

func (f *fakePolicies) Resolved(_ context.Context, _ netip.Addr, name string, addrs []netip.Addr, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolved[name] = addrs
	return nil
}

func (f *fakePolicies) Decide(_, _ netip.Addr, name string) bool {
	v, _ := f.e.Decide(name)
	return v == network.Allowed
}

// upstream answers every A query with 192.0.2.1 and records the names.
func upstream(t *testing.T) (netip.AddrPort, *[]string) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	asked := &[]string{}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, _ := p.Start(buf[:n])
			q, _ := p.Question()
			mu.Lock()
			*asked = append(*asked, q.Name.String())
			mu.Unlock()
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true})
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 42}, dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}})
			out, _ := b.Finish()
			pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), asked
}

func query(t *testing.T, name string) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func rcode(t *testing.T, resp []byte) dnsmessage.RCode {
	var p dnsmessage.Parser
	h, err := p.Start(resp)
	if err != nil {
		t.Fatal(err)
	}
	return h.RCode
}

// TestForwarderAnswersByPolicy: allowed names are forwarded and their
// addresses handed over before the answer; others get NXDOMAIN without
// reaching the upstream under default deny; strangers get no answer.
func TestForwarderAnswersByPolicy(t *testing.T) {
	up, asked := upstream(t)
	pol := &fakePolicies{e: network.Egress{AllowDomains: []string{"*.ok.test"}, DenyDomains: []string{"no.ok.test"}, DefaultDeny: true},
		resolved: map[string][]netip.Addr{}}
	f := &Forwarder{pol: pol, upstreams: []netip.AddrPort{up}, denials: NewDenials(), log: slog.New(slog.DiscardHandler)}
	local := netip.MustParseAddr("127.0.0.1")

	if resp := f.answer(local, query(t, "API.ok.test."), false); rcode(t, resp) != dnsmessage.RCodeSuccess {
		t.Errorf("allowed name: rcode %v", rcode(t, resp))
	}
	if got := pol.resolved["api.ok.test"]; !slices.Equal(got, []netip.Addr{netip.MustParseAddr("192.0.2.1")}) {
		t.Errorf("opened %v for api.ok.test", got)
	}
	for _, n := range []string{"no.ok.test.", "elsewhere.test."} {
		if resp := f.answer(local, query(t, n), false); rcode(t, resp) != dnsmessage.RCodeNameError {
			t.Errorf("%s: rcode %v, want NXDOMAIN", n, rcode(t, resp))
		}
	}
	if len(*asked) != 1 {
		t.Errorf("upstream asked for %v, want only the allowed name", *asked)
	}
	if n, last := f.denials.Get("k"); n != 2 || last[0].Name != "elsewhere.test" {
		t.Errorf("denials = %d %v", n, last)
	}
	if resp := f.answer(netip.MustParseAddr("127.0.0.2"), query(t, "api.ok.test."), false); resp != nil {
		t.Errorf("a source that is no sandbox got an answer")
	}
	if resp := f.answer(local, []byte("garbage"), false); resp != nil {
		t.Errorf("garbage got an answer")
	}
}

// TestSniff reads the name of a TLS ClientHello and of an HTTP request,
// keeping every byte for the destination.
func TestSniff(t *testing.T) {
	a, b := net.Pipe()
	// Each writer gets its pipe end as an argument: a and b are reused below,
	// and a closure over the variable would close or write the next pipe.
	go func(a net.Conn) {
		tls.Client(a, &tls.Config{ServerName: "Files.Example.org", InsecureSkipVerify: true}).Handshake()
		a.Close()
	}(a)
	rec := &recorder{r: b}
	if name, reason := sniff(rec); name != "files.example.org" || reason != "sni" {
		t.Errorf("TLS: %q %q", name, reason)
	}
	if len(rec.buf) == 0 || rec.buf[0] != 0x16 {
		t.Errorf("TLS bytes not kept: %d", len(rec.buf))
	}
	b.Close()

	a, b = net.Pipe()
	req := "GET / HTTP/1.1\r\nHost: pypi.org:80\r\n\r\n"
	go func(a net.Conn) { io.WriteString(a, req); a.Close() }(a)
	rec = &recorder{r: b}
	if name, reason := sniff(rec); name != "pypi.org" || reason != "host" {
		t.Errorf("HTTP: %q %q", name, reason)
	}
	if string(rec.buf) != req {
		t.Errorf("HTTP bytes kept %q", rec.buf)
	}

	a, b = net.Pipe()
	go func(a net.Conn) { a.Write(make([]byte, 2*maxHead)); a.Close() }(a)
	if name, _ := sniff(&recorder{r: b}); name != "" {
		t.Errorf("an endless head gave name %q", name)
	}
	b.Close()
}
