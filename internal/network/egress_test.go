package network

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseDomain(t *testing.T) {
	good := map[string]string{
		"PyPI.org.":             "pypi.org",
		"*.pythonhosted.org":    "*.pythonhosted.org",
		"a-b.c_d.example":       "a-b.c_d.example",
		"x":                     "x",
		strings.Repeat("a", 63): strings.Repeat("a", 63),
	}
	for in, want := range good {
		if got, err := ParseDomain(in); err != nil || got != want {
			t.Errorf("ParseDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "*", "*.", "a..b", "-a.b", "a-.b", "a b", "a/b", "*.*.a", "a.*.b", "ä.b",
		strings.Repeat("a", 64), strings.Repeat("a.", 127) + "ab", "1.2.3.4/8"} {
		if got, err := ParseDomain(in); err == nil {
			t.Errorf("ParseDomain(%q) = %q, want an error", in, got)
		}
	}
}

func TestMatchDomain(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"pypi.org", "pypi.org", true},
		{"pypi.org", "www.pypi.org", false},
		{"pypi.org", "xpypi.org", false},
		{"*.pythonhosted.org", "files.pythonhosted.org", true},
		{"*.pythonhosted.org", "a.b.pythonhosted.org", true},
		{"*.pythonhosted.org", "pythonhosted.org", false},
		{"*.pythonhosted.org", "evilpythonhosted.org", false},
	}
	for _, tt := range tests {
		if got := MatchDomain(tt.pattern, tt.name); got != tt.want {
			t.Errorf("MatchDomain(%q, %q) = %v", tt.pattern, tt.name, got)
		}
	}
}

func TestEgressDecide(t *testing.T) {
	e := Egress{AllowDomains: []string{"*.example.com"}, DenyDomains: []string{"bad.example.com"}, DefaultDeny: true}
	tests := []struct {
		name   string
		want   Verdict
		listed bool
	}{
		{"api.example.com", Allowed, true},
		{"bad.example.com", Denied, true}, // deny wins
		{"example.com", Denied, false},
		{"other.org", Denied, false},
	}
	for _, tt := range tests {
		if v, listed := e.Decide(tt.name); v != tt.want || listed != tt.listed {
			t.Errorf("Decide(%q) = %v, %v; want %v, %v", tt.name, v, listed, tt.want, tt.listed)
		}
	}
	e.DefaultDeny = false
	if v, listed := e.Decide("other.org"); v != Allowed || listed {
		t.Errorf("default allow: Decide(other.org) = %v, %v", v, listed)
	}
}

// TestResolvedVerdicts: an address is closed if any live name of it is
// denied, opened if one is allowed (listed, or any under default deny),
// and forgotten once its names expire.
func TestResolvedVerdicts(t *testing.T) {
	now := time.Unix(1000, 0)
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	r := resolvedAddrs{
		a: {"good.test": now.Add(time.Minute), "bad.test": now.Add(2 * time.Minute)},
		b: {"good.test": now.Add(time.Minute)},
		c: {"other.test": now.Add(-time.Second)},
	}
	allow, deny := r.verdicts(Egress{AllowDomains: []string{"good.test"}, DenyDomains: []string{"bad.test"}}, now)
	if diff := cmp.Diff(map[netip.Addr]time.Time{b: now.Add(time.Minute)}, allow); diff != "" {
		t.Errorf("allow (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[netip.Addr]time.Time{a: now.Add(2 * time.Minute)}, deny); diff != "" {
		t.Errorf("deny (-want +got):\n%s", diff)
	}
	if n := r.prune(now); n != 3 || r[c] != nil {
		t.Errorf("prune left %d pairs, %v", n, r)
	}
}

func TestDNSUpdate(t *testing.T) {
	m := &Manager{cfg: Config{Table: "tbl"}}
	now := time.Unix(1000, 0)
	src := netip.MustParseAddr("10.203.0.2")
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	var sb strings.Builder
	m.dnsUpdate(&sb, src,
		map[netip.Addr]time.Time{a: now.Add(time.Minute)}, nil,
		map[netip.Addr]time.Time{a: now.Add(time.Minute)}, map[netip.Addr]time.Time{b: now.Add(90 * time.Second)}, now, false)
	want := "add element inet tbl dns_deny { 10.203.0.2 . 192.0.2.2 timeout 90s }\n"
	if diff := cmp.Diff(want, sb.String()); diff != "" {
		t.Errorf("unchanged element rewritten or new one missing (-want +got):\n%s", diff)
	}
	sb.Reset()
	m.dnsUpdate(&sb, src, map[netip.Addr]time.Time{a: now.Add(time.Minute)}, nil, map[netip.Addr]time.Time{a: now.Add(2 * time.Minute)}, nil, now, false)
	want = "add element inet tbl dns_allow { 10.203.0.2 . 192.0.2.1 }\n" +
		"delete element inet tbl dns_allow { 10.203.0.2 . 192.0.2.1 }\n" +
		"add element inet tbl dns_allow { 10.203.0.2 . 192.0.2.1 timeout 120s }\n"
	if diff := cmp.Diff(want, sb.String()); diff != "" {
		t.Errorf("refreshed element (-want +got):\n%s", diff)
	}
}

// TestManagerDecide is the name checker's verdict: deny CIDRs first, then
// allow CIDRs, the blocked set, then the name.
func TestManagerDecide(t *testing.T) {
	src := netip.MustParseAddr("10.203.0.2")
	m := &Manager{
		blocked: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		byAddr:  map[netip.Addr]string{src: "k"},
		allows: map[string]allowEntry{"k": {addr: src,
			cidrs: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			egress: Egress{AllowDomains: []string{"good.test"}, DenyDomains: []string{"bad.test"}, DefaultDeny: true,
				DenyCIDRs: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}}}},
	}
	p := netip.MustParseAddr
	tests := []struct {
		dst, name string
		want      bool
	}{
		{"192.0.2.1", "good.test", true},
		{"192.0.2.1", "bad.test", false},
		{"192.0.2.1", "other.test", false},
		{"192.0.2.1", "", false},
		{"198.51.100.1", "", true},           // allowCidrs
		{"198.51.100.7", "good.test", false}, // denyCidrs win
		{"10.1.2.3", "good.test", false},     // blocked
	}
	for _, tt := range tests {
		if got := m.Decide(src, p(tt.dst), tt.name); got != tt.want {
			t.Errorf("Decide(%s, %q) = %v, want %v", tt.dst, tt.name, got, tt.want)
		}
	}
	if m.Decide(p("10.203.0.6"), p("192.0.2.1"), "good.test") {
		t.Errorf("an address no sandbox has was let through")
	}
}
