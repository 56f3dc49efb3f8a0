package doctor

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestDropForwardChains(t *testing.T) {
	// What `nft -j list chains` prints on a host with Docker's iptables-nft
	// rules beside sandboxd's own table.
	out := `{"nftables": [{"metainfo": {"version": "1.0.6"}},
	{"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
	{"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
	{"chain": {"family": "inet", "table": "sandboxd", "name": "forward", "handle": 3, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
	{"chain": {"family": "inet", "table": "fw", "name": "fwd", "handle": 4, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
	{"chain": {"family": "inet", "table": "fw", "name": "regular", "handle": 5}}]}`
	got := dropForwardChains(out, "sandboxd")
	want := []string{"ip filter FORWARD"}
	if !slices.Equal(got, want) {
		t.Errorf("dropForwardChains = %q, want %q", got, want)
	}
	if got := dropForwardChains("not json", "sandboxd"); got != nil {
		t.Errorf("dropForwardChains(garbage) = %q, want nothing", got)
	}
}

func TestRoom(t *testing.T) {
	for _, tc := range []struct {
		free, total int64
		want        Status
	}{
		{free: 100 << 30, total: 200 << 30, want: OK},
		{free: 3 << 30, total: 200 << 30, want: Warn},  // under 5 GiB
		{free: 10 << 30, total: 200 << 30, want: Warn}, // under 10%
		{free: 512 << 20, total: 200 << 30, want: Missing},
	} {
		if got := room(tc.free, tc.total, failFreeBytes, warnFreeBytes); got != tc.want {
			t.Errorf("room(%d, %d) = %s, want %s", tc.free, tc.total, got, tc.want)
		}
	}
}

// TestRunReportsEveryCheck runs the real checks on this host: each one
// reports a known status, every problem says how to fix it, and a required
// missing item makes the report fail.
func TestRunReportsEveryCheck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the checks read root-only state (nft, user namespaces with a mapping): run as root")
	}
	r := Run(context.Background(), Options{StateDir: t.TempDir(), NetTable: "sandboxd", Dev: true,
		First: []Check{{Name: "config", Status: OK, Required: true}}})
	var names []string
	ok := true
	for _, c := range r.Checks {
		names = append(names, c.Name)
		switch c.Status {
		case OK:
		case Missing, Warn:
			if c.Fix == "" {
				t.Errorf("check %s is %s (%s) but says no fix", c.Name, c.Status, c.Detail)
			}
			if c.Required && c.Status == Missing {
				ok = false
			}
		default:
			t.Errorf("check %s has status %q", c.Name, c.Status)
		}
		if c.Detail == "" && c.Name != "config" {
			t.Errorf("check %s says nothing", c.Name)
		}
	}
	want := []string{"config", "cgroup", "overlayfs", "userns", "idmapped-mounts", "nftables", "ip-forward", "fuse",
		"oci-runtime", "crun", "runc", "gvisor", "disk", "inodes", "forward-firewall", "chromium"}
	if !slices.Equal(names, want) {
		t.Errorf("checks = %q, want %q", names, want)
	}
	if r.OK != ok {
		t.Errorf("report OK = %v, want %v", r.OK, ok)
	}
}

// TestUsernsCheckMakesTheNamespaceAsTheSandboxesDo: the userns check makes
// its namespace the daemon's way (rootfs.IDRange.OpenUserNS, as the
// range's root), so a host that keeps users other than root from making
// user namespaces says so; it once cloned one as the host's root.
func TestUsernsCheckMakesTheNamespaceAsTheSandboxesDo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("makes a user namespace owned by another user: run as root")
	}
	r := Run(context.Background(), Options{StateDir: t.TempDir(), UserNSBase: 2_000_000})
	if c := checkNamed(t, r, "userns"); c.Status != OK || !strings.Contains(c.Detail, "host UID 2000000") {
		t.Errorf("userns on this host: %+v, want ok as host UID 2000000", c)
	}
	if c := checkNamed(t, r, "idmapped-mounts"); c.Status != OK {
		t.Errorf("idmapped-mounts on this host: %+v, want ok", c)
	}
}

func checkNamed(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %s in %+v", name, r)
	return Check{}
}
