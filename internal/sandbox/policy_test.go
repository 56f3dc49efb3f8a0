package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestResolveNetwork: a policy comes out canonical with its default filled
// in, and an invalid one is a *PolicyError naming the entry.
func TestResolveNetwork(t *testing.T) {
	p := Policy{SandboxSubnet: netip.MustParsePrefix("10.203.0.0/16")}
	got, err := p.resolveNetwork(NetworkConfig{Mode: NetworkInternet,
		AllowDomains: []string{"PyPI.org.", "*.pythonhosted.org", "pypi.org"}, DenyCIDRs: []string{"203.0.113.7"}})
	if err != nil {
		t.Fatal(err)
	}
	want := NetworkConfig{Mode: NetworkInternet, AllowDomains: []string{"*.pythonhosted.org", "pypi.org"},
		DenyCIDRs: []string{"203.0.113.7/32"}, Default: EgressDeny}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resolved (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		n    NetworkConfig
		want string
	}{
		{NetworkConfig{Mode: NetworkInternet}, EgressAllow},
		{NetworkConfig{Mode: NetworkInternet, DenyDomains: []string{"x.test"}}, EgressAllow},
		{NetworkConfig{Mode: NetworkInternet, AllowCIDRs: []string{"198.51.100.0/24"}}, EgressDeny},
		{NetworkConfig{Mode: NetworkInternet, AllowDomains: []string{"x.test"}, Default: EgressAllow}, EgressAllow},
		{NetworkConfig{Mode: NetworkNone}, ""},
	} {
		got, err := p.resolveNetwork(tc.n)
		if err != nil || got.Default != tc.want {
			t.Errorf("resolveNetwork(%+v).Default = %q, %v; want %q", tc.n, got.Default, err, tc.want)
		}
	}

	many := make([]string, MaxPolicyEntries+1)
	for i := range many {
		many[i] = fmt.Sprintf("n%d.test", i)
	}
	for _, tc := range []struct {
		n     NetworkConfig
		entry string
	}{
		{NetworkConfig{Mode: NetworkInternet, AllowDomains: []string{"ok.test", "not ok"}}, "allowDomains[1]"},
		{NetworkConfig{Mode: NetworkInternet, DenyDomains: []string{"*"}}, "denyDomains[0]"},
		{NetworkConfig{Mode: NetworkInternet, DenyCIDRs: []string{"fd00::/8"}}, "denyCidrs[0]"},
		{NetworkConfig{Mode: NetworkInternet, AllowCIDRs: []string{"10.203.0.6/32"}}, "allowCidrs[0]"},
		{NetworkConfig{Mode: NetworkInternet, Default: "perhaps"}, "default"},
		{NetworkConfig{Mode: NetworkNone, AllowDomains: []string{"x.test"}}, "allowDomains"},
		{NetworkConfig{Mode: NetworkNone, Default: EgressDeny}, "default"},
		{NetworkConfig{Mode: NetworkInternet, DenyDomains: many}, "network"},
	} {
		_, err := p.resolveNetwork(tc.n)
		var pe *PolicyError
		if !errors.As(err, &pe) || pe.Entry != tc.entry || !errors.Is(err, ErrInvalid) {
			t.Errorf("resolveNetwork(%+v) = %v, want a PolicyError naming %s", tc.n, err, tc.entry)
		}
	}
}
