package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
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

// refuseUsernsEnv, set, makes the test binary play a host that keeps users
// from making user namespaces: a seccomp filter in every thread fails
// unshare(2) with EPERM (as an LSM policy or a sysctl would), then it runs
// the checks with the variable's value as state directory and prints the
// report as JSON.
const refuseUsernsEnv = "SANDBOXD_DOCTOR_TEST_REFUSE_USERNS"

func TestMain(m *testing.M) {
	if dir := os.Getenv(refuseUsernsEnv); dir != "" {
		if err := refuseUnshare(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		json.NewEncoder(os.Stdout).Encode(Run(context.Background(), Options{StateDir: dir}))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// refuseUnshare installs, in every thread of the process, a seccomp filter
// that fails unshare(2) with EPERM and allows everything else.
func refuseUnshare() error {
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_UNSHARE, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("installing the seccomp filter: %w", e)
	}
	return nil
}

// A host that keeps users from making user namespaces says so in the
// userns check (the check once cloned its namespace as the host's root,
// and said ok), and idmapped mounts are missing with it.
func TestUsernsCheckOnAHostThatRefusesUserNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("makes a user namespace owned by another user: run as root")
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), refuseUsernsEnv+"="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the refusing test binary: %v", err)
	}
	var r Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("its report: %v: %s", err, out)
	}
	if c := checkNamed(t, r, "userns"); c.Status != Missing || !strings.Contains(c.Detail, "operation not permitted") || c.Fix == "" {
		t.Errorf("userns where users cannot make user namespaces: %+v, want missing, saying why and how to fix it", c)
	}
	if c := checkNamed(t, r, "idmapped-mounts"); c.Status != Missing {
		t.Errorf("idmapped-mounts without user namespaces: %+v, want missing", c)
	}
}
