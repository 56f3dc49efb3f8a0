package network

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

func TestLinkForSlot(t *testing.T) {
	sub := netip.MustParsePrefix("10.203.0.0/16")
	tests := []struct {
		name   string
		subnet netip.Prefix
		slot   int
		want   Link
		err    bool
	}{
		{"first", sub, 0, link("10.203.0.0/30", "10.203.0.1", "10.203.0.2"), false},
		{"second", sub, 1, link("10.203.0.4/30", "10.203.0.5", "10.203.0.6"), false},
		{"crosses octet", sub, 64, link("10.203.1.0/30", "10.203.1.1", "10.203.1.2"), false},
		{"last", sub, 16383, link("10.203.255.252/30", "10.203.255.253", "10.203.255.254"), false},
		{"past the end", sub, 16384, Link{}, true},
		{"negative", sub, -1, Link{}, true},
		{"single slot", netip.MustParsePrefix("192.168.7.8/30"), 0, link("192.168.7.8/30", "192.168.7.9", "192.168.7.10"), false},
		{"too small", netip.MustParsePrefix("192.168.7.8/31"), 0, Link{}, true},
		{"ipv6", netip.MustParsePrefix("fd00::/64"), 0, Link{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LinkForSlot(tt.subnet, tt.slot)
			if (err != nil) != tt.err {
				t.Fatalf("LinkForSlot(%s, %d) error = %v, want error %v", tt.subnet, tt.slot, err, tt.err)
			}
			if got != tt.want {
				t.Errorf("LinkForSlot(%s, %d) = %+v, want %+v", tt.subnet, tt.slot, got, tt.want)
			}
		})
	}
	if n := SlotCount(sub); n != 16384 {
		t.Errorf("SlotCount(%s) = %d, want 16384", sub, n)
	}
}

func link(prefix, gw, addr string) Link {
	return Link{Prefix: netip.MustParsePrefix(prefix), Gateway: netip.MustParseAddr(gw), Address: netip.MustParseAddr(addr)}
}

func TestNormalizeCIDRs(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
		err  bool
	}{
		{"empty", nil, nil, false},
		{"masks host bits", []string{"10.1.2.3/24"}, []string{"10.1.2.0/24"}, false},
		{"dedupes and sorts", []string{"192.168.1.1/32", "10.0.0.1/32", "192.168.1.1/32"}, []string{"10.0.0.1/32", "192.168.1.1/32"}, false},
		{"drops contained", []string{"10.1.0.0/16", "10.0.0.0/8", "10.1.2.3/32", "172.16.0.0/12"}, []string{"10.0.0.0/8", "172.16.0.0/12"}, false},
		{"unmaps", []string{"::ffff:10.0.0.1/128"}, []string{"10.0.0.1/32"}, false},
		{"ipv6", []string{"fd00::/8"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in []netip.Prefix
			for _, s := range tt.in {
				in = append(in, netip.MustParsePrefix(s))
			}
			got, err := normalizeCIDRs(in)
			if (err != nil) != tt.err {
				t.Fatalf("error = %v, want error %v", err, tt.err)
			}
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.String())
			}
			if diff := cmp.Diff(tt.want, gotS); diff != "" {
				t.Errorf("normalizeCIDRs(%v) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestValidKey(t *testing.T) {
	for _, k := range []string{"a", "abc123", "abcdefghijkl"} {
		if err := validKey(k); err != nil {
			t.Errorf("validKey(%q) = %v, want nil", k, err)
		}
	}
	for _, k := range []string{"", "abcdefghijklm", "ABC", "a-b", "a/b", "..", "a b", "é"} {
		if err := validKey(k); err == nil {
			t.Errorf("validKey(%q) = nil, want error", k)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{}.withDefaults()
	if err := ok.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"relative netns dir", func(c *Config) { c.NetnsDir = "run/netns" }},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("fd00::/64") }},
		{"subnet too small", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.0.0.0/31") }},
		{"subnet host bits", func(c *Config) { c.Subnet = netip.MustParsePrefix("10.0.0.1/16") }},
		{"ipv6 dns", func(c *Config) { c.DNS = []netip.Addr{netip.MustParseAddr("2001:db8::1")} }},
		{"ipv6 blocked", func(c *Config) { c.Blocked = []netip.Prefix{netip.MustParsePrefix("fd00::/8")} }},
		{"table with space", func(c *Config) { c.Table = "a b" }},
		{"table starting with digit", func(c *Config) { c.Table = "1abc" }},
		{"long prefix", func(c *Config) { c.InterfacePrefix = "sbxx" }},
		{"prefix with star", func(c *Config) { c.InterfacePrefix = "sb*" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			if err := c.validate(); err == nil {
				t.Errorf("validate() = nil, want error")
			}
		})
	}
}

// TestRuleset pins the table Setup installs; run with -update after a
// deliberate change and review the diff.
func TestRuleset(t *testing.T) {
	m := &Manager{cfg: Config{
		Subnet:  DefaultSubnet,
		DNS:     []netip.Addr{netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("1.1.1.1")},
		DNSPort: 5353, CheckPort: 5354,
	}.withDefaults()}
	allows := map[string]allowEntry{
		"c": {addr: netip.MustParseAddr("10.203.0.10"), egress: Egress{
			AllowDomains: []string{"*.pythonhosted.org", "pypi.org"}, DefaultDeny: true,
			DenyCIDRs: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		}},
		"b": {addr: netip.MustParseAddr("10.203.0.6"), host: []netip.Prefix{netip.MustParsePrefix("10.203.0.5/32")}},
		"a": {addr: netip.MustParseAddr("10.203.0.2"), cidrs: []netip.Prefix{
			netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.1.10/32"),
		}},
	}
	m.blocked = m.blockedSet(prefixes("192.0.2.0/24", "192.0.2.1/32", "198.51.100.7/32"))
	got := m.ruleset(allows)
	golden := filepath.Join("testdata", "ruleset.nft")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("ruleset (-%s +got):\n%s", golden, diff)
	}
}

func TestAllowUpdate(t *testing.T) {
	m := &Manager{cfg: Config{Table: "tbl"}}
	a := netip.MustParseAddr("10.203.0.2")
	p := netip.MustParsePrefix
	tests := []struct {
		name     string
		old, new allowEntry
		want     string
	}{
		{"nothing", allowEntry{}, allowEntry{}, ""},
		{"add", allowEntry{}, allowEntry{addr: a, cidrs: []netip.Prefix{p("10.0.0.0/8")}},
			"add element inet tbl allow { 10.203.0.2 . 10.0.0.0/8 }\n"},
		{"remove", allowEntry{addr: a, cidrs: []netip.Prefix{p("10.0.0.0/8")}}, allowEntry{},
			"add element inet tbl allow { 10.203.0.2 . 10.0.0.0/8 }\n" +
				"delete element inet tbl allow { 10.203.0.2 . 10.0.0.0/8 }\n"},
		{"change keeps common", allowEntry{addr: a, cidrs: []netip.Prefix{p("10.0.0.0/8"), p("1.2.3.4/32")}}, allowEntry{addr: a, cidrs: []netip.Prefix{p("1.2.3.4/32"), p("5.6.7.8/32")}},
			"add element inet tbl allow { 10.203.0.2 . 10.0.0.0/8 }\n" +
				"delete element inet tbl allow { 10.203.0.2 . 10.0.0.0/8 }\n" +
				"add element inet tbl allow { 10.203.0.2 . 5.6.7.8/32 }\n"},
		{"host set apart", allowEntry{addr: a, cidrs: []netip.Prefix{p("1.2.3.4/32")}}, allowEntry{addr: a, cidrs: []netip.Prefix{p("1.2.3.4/32")}, host: []netip.Prefix{p("10.203.0.1/32")}},
			"add element inet tbl allow_host { 10.203.0.2 . 10.203.0.1/32 }\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, m.allowUpdate(tt.old, tt.new)); diff != "" {
				t.Errorf("allowUpdate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWithoutPrefix(t *testing.T) {
	sub := netip.MustParsePrefix("10.203.0.0/16")
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"disjoint kept", []string{"10.1.0.0/16", "192.0.2.0/24"}, []string{"10.1.0.0/16", "192.0.2.0/24"}},
		{"inside dropped", []string{"10.203.0.6/32", "10.203.0.0/16", "1.2.3.4/32"}, []string{"1.2.3.4/32"}},
		{"container split", []string{"10.0.0.0/8"}, []string{
			"10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/13", "10.200.0.0/15", "10.202.0.0/16",
			"10.204.0.0/14", "10.208.0.0/12", "10.224.0.0/11",
		}},
		{"everything", []string{"0.0.0.0/0"}, []string{
			"0.0.0.0/5", "8.0.0.0/7", "10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/13", "10.200.0.0/15",
			"10.202.0.0/16", "10.204.0.0/14", "10.208.0.0/12", "10.224.0.0/11", "11.0.0.0/8",
			"12.0.0.0/6", "16.0.0.0/4", "32.0.0.0/3", "64.0.0.0/2", "128.0.0.0/1",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := withoutPrefix(prefixes(tt.in...), sub)
			var gotS []string
			for _, p := range got {
				gotS = append(gotS, p.String())
				if p.Overlaps(sub) {
					t.Errorf("%s overlaps %s", p, sub)
				}
			}
			if diff := cmp.Diff(tt.want, gotS); diff != "" {
				t.Errorf("withoutPrefix(%v) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}
