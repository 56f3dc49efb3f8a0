package bucket

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestEndpointGuard(t *testing.T) {
	names := map[string][]netip.Addr{
		"s3.example":      {netip.MustParseAddr("203.0.113.10")},
		"rebound.example": {netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("127.0.0.1")},
		"minio.lan":       {netip.MustParseAddr("192.168.1.20")},
	}
	g := EndpointGuard{
		Refuse: []netip.Prefix{netip.MustParsePrefix("10.203.0.0/16")},
		Lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
			if a, ok := names[host]; ok {
				return a, nil
			}
			return nil, errors.New("no such host")
		},
		HostAddrs: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("198.51.100.7")} },
	}
	for _, tc := range []struct {
		endpoint string
		want     error
	}{
		{"https://s3.example", nil},
		{"http://minio.lan:9000", nil}, // a private network is the operator's business, as for sandboxes' allowCidrs
		{"http://203.0.113.5:9000", nil},
		{"http://127.0.0.1:9000", ErrEndpointForbidden},
		{"http://127.1.2.3", ErrEndpointForbidden},
		{"http://[::1]:9000", ErrEndpointForbidden},
		{"http://[::ffff:127.0.0.1]:9000", ErrEndpointForbidden},
		{"http://0.0.0.0:9000", ErrEndpointForbidden},
		{"http://[::]:9000", ErrEndpointForbidden},
		{"http://169.254.169.254", ErrEndpointForbidden},
		{"http://[fe80::1]:80", ErrEndpointForbidden},
		{"http://224.0.0.1", ErrEndpointForbidden},
		{"http://10.203.0.9:8080", ErrEndpointForbidden},   // another sandbox
		{"http://198.51.100.7:7070", ErrEndpointForbidden}, // the host itself
		{"https://rebound.example", ErrEndpointForbidden},  // one refused address is enough
		{"https://nowhere.example", ErrUnresolvable},
	} {
		if err := g.Check(context.Background(), tc.endpoint); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.endpoint, err, tc.want)
		}
	}

	g.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.203.0.9/32")}
	for _, ok := range []string{"http://127.0.0.1:9000", "http://10.203.0.9:8080", "https://rebound.example"} {
		if err := g.Check(context.Background(), ok); err != nil {
			t.Errorf("%s with an allow list: %v", ok, err)
		}
	}
	if err := g.Check(context.Background(), "http://127.0.0.2"); !errors.Is(err, ErrEndpointForbidden) {
		t.Errorf("127.0.0.2 is outside the allow list: %v", err)
	}
}

// TestEndpointGuardResolvesWithTheSystem: a name is resolved by the host's
// resolver (localhost through /etc/hosts), and its host addresses are read
// from its interfaces. Other tests' daemons add and remove interfaces
// meanwhile (a sandbox's veth has a host address), so an address that is
// gone by the time it was checked is not the guard's fault.
func TestEndpointGuardResolvesWithTheSystem(t *testing.T) {
	if err := (EndpointGuard{}).Check(context.Background(), "http://localhost:9000"); !errors.Is(err, ErrEndpointForbidden) {
		t.Errorf("localhost: %v", err)
	}
	for _, a := range interfaceAddrs() {
		if a.IsLoopback() || a.IsLinkLocalUnicast() {
			continue
		}
		u := "http://" + netip.AddrPortFrom(a, 9000).String()
		if err := (EndpointGuard{}).Check(context.Background(), u); !errors.Is(err, ErrEndpointForbidden) && slices.Contains(interfaceAddrs(), a) {
			t.Errorf("the host's own %s: %v", u, err)
		}
	}
}
