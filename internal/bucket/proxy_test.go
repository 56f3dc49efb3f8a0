package bucket

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// proxyURL is the proxy's address with its credentials, as s3fs finds it
// in its environment.
func proxyURL(t *testing.T, p *EgressProxy) *url.URL {
	t.Helper()
	for _, kv := range p.Env() {
		if v, ok := strings.CutPrefix(kv, "https_proxy="); ok {
			u, err := url.Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			return u
		}
	}
	t.Fatal("no https_proxy in the proxy's environment")
	return nil
}

// TestEgressProxyChecksEveryConnection: a name that resolved to an allowed
// address when the mount was checked and to a refused one later (DNS
// rebinding) is refused by the proxy at the connection, for http and
// https endpoints alike; allowed endpoints are reached, https end to end.
func TestEgressProxyChecksEveryConnection(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain "+r.Host+" "+r.URL.Path+" auth="+r.Header.Get("Proxy-Authorization"))
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure "+r.URL.Path)
	}))
	defer secure.Close()

	// rebind.test answers 127.0.0.1 (allowed here) the first time it is
	// asked, then 127.0.0.2 (loopback, refused).
	var rebindAsked atomic.Int32
	g := EndpointGuard{
		Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
		Lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
			switch host {
			case "s3.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			case "rebind.test":
				if rebindAsked.Add(1) == 1 {
					return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
				}
				return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
			}
			return nil, errors.New("no such host")
		},
		HostAddrs: func() []netip.Addr { return nil },
	}
	var mu sync.Mutex
	var dials []string
	p, err := StartEgressProxy(filepath.Join(t.TempDir(), "proxy.json"), g, func(r string) {
		mu.Lock()
		dials = append(dials, r)
		mu.Unlock()
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	roots := secure.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	through := func(proxy *url.URL) *http.Client {
		return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy),
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "example.com"}}}
	}
	c := through(proxyURL(t, p))
	get := func(c *http.Client, rawURL string) (int, string, error) {
		resp, err := c.Get(rawURL)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	port := func(s *httptest.Server) string {
		return s.Listener.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1"):]
	}

	code, body, err := get(c, "http://s3.test"+port(plain)+"/bucket/key")
	if err != nil || code != 200 || body != "plain s3.test"+port(plain)+" /bucket/key auth=" {
		t.Errorf("http endpoint: %d %q %v (the proxy's credentials must not reach the endpoint)", code, body, err)
	}
	code, body, err = get(c, "https://s3.test"+port(secure)+"/bucket/key")
	if err != nil || code != 200 || body != "secure /bucket/key" {
		t.Errorf("https endpoint: %d %q %v", code, body, err)
	}

	if err := g.Check(context.Background(), "http://rebind.test"+port(plain)); err != nil {
		t.Fatalf("the mount-time check: %v", err)
	}
	code, body, err = get(c, "http://rebind.test"+port(plain)+"/latest/meta-data")
	if err != nil || code != http.StatusForbidden || !strings.Contains(body, "127.0.0.2") {
		t.Errorf("http to a rebound name: %d %q %v, want 403", code, body, err)
	}
	if _, _, err = get(c, "https://rebind.test"+port(secure)+"/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("https to a rebound name: %v, want the CONNECT refused", err)
	}

	for _, bad := range []*url.URL{{Scheme: "http", Host: proxyURL(t, p).Host},
		{Scheme: "http", Host: proxyURL(t, p).Host, User: url.UserPassword(proxyUser, "guess")}} {
		code, _, err := get(through(bad), "http://s3.test"+port(plain)+"/")
		if err != nil || code != http.StatusProxyAuthRequired {
			t.Errorf("without the secret (%s): %d %v, want 407", bad.Redacted(), code, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(dials, "allowed") || !slices.Contains(dials, "refused") {
		t.Errorf("dials counted %v", dials)
	}
}

// TestEgressProxyKeepsItsAddress: s3fs outlives the daemon, so a restarted
// daemon's proxy answers at the same address with the same secret.
func TestEgressProxyKeepsItsAddress(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "proxy.json")
	log := slog.New(slog.DiscardHandler)
	first, err := StartEgressProxy(conf, EndpointGuard{}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	env := first.Env()
	first.Close()
	second, err := StartEgressProxy(conf, EndpointGuard{}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if !slices.Equal(second.Env(), env) {
		t.Errorf("after a restart %v, before %v", second.Env(), env)
	}
}
