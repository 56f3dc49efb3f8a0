package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

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

func TestTenantsHostAccessNeedsTheOperator(t *testing.T) {
	m := &Manager{opts: Options{HostAccessAllow: []netip.Prefix{
		netip.MustParsePrefix("10.203.0.0/16"), netip.MustParsePrefix("192.0.2.7/32")}}}
	for _, tc := range []struct {
		id    string
		cidrs []string
		ok    bool
	}{
		{"demo", []string{"127.0.0.1/32", "0.0.0.0/0"}, true}, // the admin namespace: the operator's own
		{"acme/demo", nil, true},
		{"acme/demo", []string{"10.203.4.1/32", "10.203.0.0/16", "192.0.2.7/32"}, true},
		{"acme/demo", []string{"127.0.0.1/32"}, false},
		{"acme/demo", []string{"10.203.4.1/32", "192.0.2.8/32"}, false}, // one entry outside is enough
		{"acme/demo", []string{"10.0.0.0/8"}, false},                    // wider than what is allowed
		{"acme/demo", []string{"0.0.0.0/0"}, false},
	} {
		err := m.checkHostAccess(tc.id, NetworkConfig{Mode: NetworkInternet, AllowHostCIDRs: tc.cidrs})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrHostAccessForbidden)) {
			t.Errorf("%s %v: %v, want ok=%v", tc.id, tc.cidrs, err, tc.ok)
		}
	}
	m.opts.HostAccessAllow = nil
	if err := m.checkHostAccess("acme/demo", NetworkConfig{Mode: NetworkInternet, AllowHostCIDRs: []string{"10.203.4.1/32"}}); !errors.Is(err, ErrHostAccessForbidden) {
		t.Errorf("without --host-access-allow: %v", err)
	}
}

// TestInstanceTypesMayNameARuntime: with --instance-type-runtimes, a
// sandbox of that instance type that names no runtime gets the type's; one
// that names its own keeps it; other types keep the default; a type's
// runtime the host cannot run is RUNTIME_UNAVAILABLE, never another one.
func TestInstanceTypesMayNameARuntime(t *testing.T) {
	p := Policy{
		DefaultImage: "host", DefaultNetwork: NetworkNone, DefaultRuntime: RuntimeCrun,
		Runtimes:             []string{RuntimeCrun, RuntimeGVisor},
		MaxLimits:            Limits{MemoryBytes: 8 << 30, MilliCPU: 4000, Pids: 32768, DiskBytes: 1 << 40},
		DefaultLimits:        Limits{MemoryBytes: 1 << 30, MilliCPU: 1000, Pids: 1024},
		DefaultSleepAfter:    time.Minute,
		MaxSleepAfter:        time.Hour,
		InstanceTypeRuntimes: map[string]string{"lite": RuntimeGVisor, "heavy": RuntimeRunc},
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{InstanceType: "lite"}, RuntimeGVisor},
		{Config{InstanceType: "lite", Runtime: RuntimeCrun}, RuntimeCrun},
		{Config{InstanceType: "standard"}, RuntimeCrun},
		{Config{}, RuntimeCrun},
	} {
		got, err := p.Resolve(tc.cfg)
		if err != nil || got.Runtime != tc.want {
			t.Errorf("Resolve(%+v).Runtime = %q, %v; want %q", tc.cfg, got.Runtime, err, tc.want)
		}
	}
	if _, err := p.Resolve(Config{InstanceType: "heavy"}); !errors.Is(err, ErrRuntimeUnavailable) {
		t.Errorf("heavy (runc, not available): %v, want ErrRuntimeUnavailable", err)
	}
}
