package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/sandboxd/sandboxd/internal/network"
)

func TestBlockedRanges(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		name     string
		in       []string
		want     []netip.Prefix
		hostNets bool
		err      bool
	}{
		{"default", nil, network.DefaultBlocked, true, false},
		{"nothing", []string{}, []netip.Prefix{}, false, false},
		{"host only", []string{"host"}, []netip.Prefix{}, true, false},
		{"private and more", []string{"private", " 203.0.113.7 ", "198.18.0.1/15"},
			append(slices.Clone(network.DefaultBlocked), p("203.0.113.7/32"), p("198.18.0.0/15")), false, false},
		{"ipv6", []string{"fd00::/8"}, nil, false, true},
		{"word", []string{"lan"}, nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, hostNets, err := blockedRanges(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("blockedRanges(%q) error = %v, want error %v", tt.in, err, tt.err)
			}
			if tt.err {
				return
			}
			if !slices.Equal(got, tt.want) || hostNets != tt.hostNets {
				t.Errorf("blockedRanges(%q) = %v, %v; want %v, %v", tt.in, got, hostNets, tt.want, tt.hostNets)
			}
		})
	}
}

func TestValidateCluster(t *testing.T) {
	tests := []struct {
		name    string
		listen  string
		tls     bool
		cl      Cluster
		wantURL string
		err     bool
	}{
		{"single host", "127.0.0.1:7070", false, Cluster{}, "", false},
		{"url alone", "127.0.0.1:7070", false, Cluster{NodeURL: "http://h:1"}, "", true},
		{"derived", "10.0.0.5:7070", false, Cluster{NodeName: "n1"}, "http://10.0.0.5:7070", false},
		{"derived tls", "node.example:7443", true, Cluster{NodeName: "n1", Kubeconfig: "/k"}, "https://node.example:7443", false},
		{"wildcard", "0.0.0.0:7070", false, Cluster{NodeName: "n1"}, "", true},
		{"no host", ":7070", false, Cluster{NodeName: "n1"}, "", true},
		{"wildcard with url", ":7070", false, Cluster{NodeName: "n1", NodeURL: "http://10.0.0.5:7070"}, "http://10.0.0.5:7070", false},
		{"kubeconfig without name", "127.0.0.1:7070", false, Cluster{Kubeconfig: "/k"}, "", true},
		{"bad name", "127.0.0.1:7070", false, Cluster{NodeName: "Node_1"}, "", true},
		{"bad url", "127.0.0.1:7070", false, Cluster{NodeName: "n1", NodeURL: "http://h:1/path?q"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Config{Listen: tt.listen, Cluster: tt.cl}
			if tt.tls {
				c.TLSCert, c.TLSKey = "/c", "/k"
			}
			errs := c.validateCluster()
			if (len(errs) > 0) != tt.err {
				t.Fatalf("errors %v, want error %v", errs, tt.err)
			}
			if !tt.err && c.Cluster.NodeURL != tt.wantURL {
				t.Errorf("node URL %q, want %q", c.Cluster.NodeURL, tt.wantURL)
			}
		})
	}
}

func TestBucketEndpointAllow(t *testing.T) {
	got, err := prefixes("--bucket-endpoint-allow", []string{"127.0.0.1", " 10.0.0.0/8", "::1", "fd00::/8"})
	if err != nil || fmt.Sprint(got) != "[127.0.0.1/32 10.0.0.0/8 ::1/128 fd00::/8]" {
		t.Errorf("prefixes: %v %v", got, err)
	}
	if _, err := prefixes("--bucket-endpoint-allow", []string{"localhost"}); err == nil {
		t.Error("a name is not an address")
	}
}

func TestHostAccessAllow(t *testing.T) {
	got, err := hostAccessPrefixes([]string{"192.0.2.7", " 10.203.0.0/16"})
	if err != nil || fmt.Sprint(got) != "[192.0.2.7/32 10.203.0.0/16]" {
		t.Errorf("hostAccessPrefixes: %v %v", got, err)
	}
	for _, bad := range []string{"::1", "fd00::/8", "localhost"} {
		if _, err := hostAccessPrefixes([]string{bad}); err == nil {
			t.Errorf("%q accepted: allowHostCidrs are IPv4 addresses", bad)
		}
	}
}

func TestInstanceTypeRuntimes(t *testing.T) {
	got, err := instanceTypeRuntimes([]string{"lite=gvisor", " heavy=crun"})
	if err != nil || len(got) != 2 || got["lite"] != "gvisor" || got["heavy"] != "crun" {
		t.Errorf("instanceTypeRuntimes = %v, %v", got, err)
	}
	if got, err := instanceTypeRuntimes(nil); got != nil || err != nil {
		t.Errorf("none: %v, %v", got, err)
	}
	for _, bad := range [][]string{{"lite"}, {"tiny=gvisor"}, {"lite=docker"}, {"lite=gvisor", "lite=crun"}, {""}} {
		if _, err := instanceTypeRuntimes(bad); err == nil {
			t.Errorf("instanceTypeRuntimes(%q) accepted", bad)
		}
	}
}

// TestNetworkFlagsAreCheckedUpFront: what the network manager would
// refuse at start-up, after the daemon made its state directory, locks
// and cgroup parent, Validate refuses first.
func TestNetworkFlagsAreCheckedUpFront(t *testing.T) {
	good := Config{RunDir: "/run/sandboxd", Subnet: "10.203.0.0/16", NetTable: "sandboxd", IfacePrefix: "sbx"}
	tests := []struct {
		name string
		edit func(c *Config)
		bad  bool
	}{
		{"defaults", func(c *Config) {}, false},
		{"dns", func(c *Config) { c.DNS = []string{"10.0.0.53"} }, false},
		{"subnet /31", func(c *Config) { c.Subnet = "10.77.0.0/31" }, true},
		{"subnet host bits", func(c *Config) { c.Subnet = "10.77.0.1/24" }, true},
		{"subnet IPv6", func(c *Config) { c.Subnet = "fd00:77::/64" }, true},
		{"subnet unparsable", func(c *Config) { c.Subnet = "ten" }, true},
		{"dns IPv6", func(c *Config) { c.DNS = []string{"fd00::53"} }, true},
		{"dns unparsable", func(c *Config) { c.DNS = []string{"resolver"} }, true},
		{"iface prefix digit", func(c *Config) { c.IfacePrefix = "q1" }, true},
		{"iface prefix too long", func(c *Config) { c.IfacePrefix = "abcd" }, true},
		{"table dash", func(c *Config) { c.NetTable = "a-b" }, true},
		{"table digit first", func(c *Config) { c.NetTable = "1ab" }, true},
		{"blocked", func(c *Config) { c.Blocked = []string{"nowhere"} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			ncfg, err := c.networkConfig()
			if err == nil {
				err = ncfg.Validate()
			}
			if (err != nil) != tt.bad {
				t.Errorf("err = %v, want an error: %v", err, tt.bad)
			}
		})
	}
}

func TestCheckListenAddr(t *testing.T) {
	for addr, bad := range map[string]bool{
		"127.0.0.1:7070": false, ":0": false, "[::1]:7070": false, "localhost:http": false,
		"7070": true, "127.0.0.1:70700": true, "127.0.0.1:x y": true, "127.0.0.1:-1": true,
	} {
		if err := checkListenAddr(addr); (err != nil) != bad {
			t.Errorf("checkListenAddr(%q) = %v, want an error: %v", addr, err, bad)
		}
	}
}
