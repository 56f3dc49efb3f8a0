package main

import (
	"testing"

	"github.com/sandboxd/sandboxd/internal/httpserve"
)

// TestConnsPerSourceDefaults: a single host bounds each source but
// loopback (a proxy on the host); a cluster node bounds none unless told
// to (its callers are the gateways, many users from one address each);
// an empty exemption list exempts nothing.
func TestConnsPerSourceDefaults(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantMax    int
		wantExempt []string // nil: loopback
	}{
		{"single host", nil, httpserve.DefaultMaxPerSource, []string{"loopback"}},
		{"cluster node", []string{"--node-name", "n1"}, 0, []string{"loopback"}},
		{"cluster node told to bound", []string{"--node-name", "n1", "--max-conns-per-source", "100", "--conns-per-source-exempt", "10.0.0.0/8"}, 100, []string{"10.0.0.0/8"}},
		{"no exemption", []string{"--conns-per-source-exempt", ""}, httpserve.DefaultMaxPerSource, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags("serve", append([]string{"--config", "", "--agent", "/bin/true"}, tc.args...))
			if err != nil {
				t.Fatal(err)
			}
			if o.cfg.MaxConnsPerSource != tc.wantMax {
				t.Errorf("max per source %d, want %d", o.cfg.MaxConnsPerSource, tc.wantMax)
			}
			if got := o.cfg.ConnsPerSourceExempt; len(got) != len(tc.wantExempt) || (len(got) > 0 && got[0] != tc.wantExempt[0]) {
				t.Errorf("exempt %q, want %q", got, tc.wantExempt)
			}
		})
	}
	for _, bad := range [][]string{{"--max-conns-per-source", "-1"}, {"--conns-per-source-exempt", "proxy.example"}} {
		if _, err := parseFlags("serve", append([]string{"--config", "", "--agent", "/bin/true"}, bad...)); err == nil {
			t.Errorf("%q taken", bad)
		}
	}
	if _, err := parseGatewayFlags([]string{"--conns-per-source-exempt", "proxy.example"}); err == nil {
		t.Error("the gateway took a bad exemption")
	}
}
