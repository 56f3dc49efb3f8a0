package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

const userNSSize = 65536

// isolationOf returns what info says isolates the sandbox.
func isolationOf(t *testing.T, sb *client.Sandbox) api.Isolation {
	t.Helper()
	inf, err := sb.Ensure(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return inf.Isolation
}

// hostUIDOf returns the host UID of the host process whose command line
// is args, as ps on the host shows it.
//
// A started process's answer may come before its shell has exec'd the
// command (the record is saved while it starts), so the process is waited
// for, up to 10 s.
func hostUIDOf(t *testing.T, args string) int {
	t.Helper()
	var out []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var err error
		if out, err = exec.Command("ps", "-eo", "uid=,args=").Output(); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) > 1 && strings.Join(f[1:], " ") == args {
				uid, _ := strconv.Atoi(f[0])
				return uid
			}
		}
	}
	t.Fatalf("no host process %q in ps within 10 s:\n%s", args, out)
	return -1
}

// hostOwnerIn returns the host UID that owns path in some sandbox's
// writable layer of daemon d.
func hostOwnerIn(t *testing.T, d *testdaemon.Daemon, path string) int {
	t.Helper()
	for _, key := range d.Keys() {
		fi, err := os.Lstat(filepath.Join(d.StateDir, "sandboxes", key, "upper", path))
		if err == nil {
			return int(fi.Sys().(*syscall.Stat_t).Uid)
		}
	}
	t.Fatalf("%s is in no sandbox's upper layer", path)
	return -1
}

// TestUserNamespaces tries to show that a sandbox's root is the host's
// root: it must fail. Every sandbox runs in a user namespace of its own
// whose root is an unprivileged host UID from a range of 65536 that no
// other sandbox shares.
func TestUserNamespaces(t *testing.T) {
	d := daemon(t)
	one, two := d.Client.Sandbox("userns-one"), d.Client.Sandbox("userns-two")
	iso1, iso2 := isolationOf(t, one), isolationOf(t, two)
	for _, iso := range []api.Isolation{iso1, iso2} {
		if !iso.UserNamespace || iso.HostUIDBase < 1_000_000 || iso.Runtime == "" {
			t.Fatalf("isolation %+v: want a user namespace at or above 1000000", iso)
		}
	}

	t.Run("ranges are disjoint", func(t *testing.T) {
		a, b := int64(iso1.HostUIDBase), int64(iso2.HostUIDBase)
		if a < b+userNSSize && b < a+userNSSize {
			t.Errorf("ranges at %d and %d overlap", a, b)
		}
	})

	t.Run("processes run as an unprivileged host UID", func(t *testing.T) {
		p, err := one.StartProcess(ctxT(t, 60*time.Second), "exec sleep 3141")
		if err != nil {
			t.Fatal(err)
		}
		defer p.Kill(ctxT(t, 10*time.Second), "KILL")
		uid := hostUIDOf(t, "sleep 3141")
		if uid < int(iso1.HostUIDBase) || uid >= int(iso1.HostUIDBase)+userNSSize {
			t.Errorf("the sandbox's root runs as host UID %d, want its range %d+", uid, iso1.HostUIDBase)
		}
		if got := trim(run(t, one, "id -u; cat /proc/self/uid_map")); !strings.HasPrefix(got, "0\n") ||
			!strings.Contains(got, strconv.Itoa(int(iso1.HostUIDBase))) {
			t.Errorf("inside: %q, want root mapped to %d", got, iso1.HostUIDBase)
		}
	})

	t.Run("files root makes are not the host root's", func(t *testing.T) {
		run(t, one, "echo x > /root/by-exec; mkdir -p /workspace && echo y > /workspace/by-exec")
		if _, err := one.WriteFile(ctxT(t, 30*time.Second), "/root/by-api", []byte("z")); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"root/by-exec", "workspace/by-exec", "root/by-api"} {
			if uid := hostOwnerIn(t, d, f); uid != int(iso1.HostUIDBase) {
				t.Errorf("%s is owned by host UID %d, want the range's root %d", f, uid, iso1.HostUIDBase)
			}
		}
		if got := trim(run(t, one, "stat -c %u:%g /root/by-api /etc/hosts /usr/bin/env")); got != "0:0\n0:0\n0:0" {
			t.Errorf("owners inside: %q, want root's", got)
		}
	})

	t.Run("sandbox info --json shows the isolation", func(t *testing.T) {
		out, errOut, code := cli(t, d, "", "info", "--json", "userns-one")
		if code != 0 {
			t.Fatalf("sandbox info --json: exit %d: %s", code, errOut)
		}
		var got struct {
			Isolation map[string]any `json:"isolation"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("sandbox info --json: %v\n%s", err, out)
		}
		want := map[string]any{"runtime": iso1.Runtime, "userNamespace": true, "hostUidBase": float64(iso1.HostUIDBase)}
		if !reflect.DeepEqual(got.Isolation, want) {
			t.Errorf(`"isolation": %v, want %v`, got.Isolation, want)
		}
	})

	t.Run("the image's setuid binaries keep their owner and bit", func(t *testing.T) {
		// The host image's /usr is an idmapped bind: a set-user-ID file of
		// the host's root is the sandbox's root's, still set-user-ID, and
		// runs for root and for other users (no_new_privs: it gains
		// nothing, but it is not refused).
		var bin string
		for _, p := range []string{"/usr/bin/mount", "/usr/bin/su", "/usr/bin/umount"} {
			if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSetuid != 0 && fi.Sys().(*syscall.Stat_t).Uid == 0 {
				bin = p
				break
			}
		}
		if bin == "" {
			t.Skip("no set-user-ID root binary among mount, su, umount on this host")
		}
		if got := trim(run(t, one, "stat -c '%A %u:%g' "+bin)); got != "-rwsr-xr-x 0:0" {
			t.Errorf("%s inside: %q, want -rwsr-xr-x 0:0", bin, got)
		}
		run(t, one, bin+" --version >/dev/null")
		run(t, one, "setpriv --reuid=65534 --regid=65534 --clear-groups "+bin+" --version >/dev/null")
	})

	t.Run("no capability over the host's namespaces", func(t *testing.T) {
		hostNS, err := os.Readlink("/proc/self/ns/user")
		if err != nil {
			t.Fatal(err)
		}
		inside := trim(run(t, one, "readlink /proc/self/ns/user"))
		if inside == hostNS {
			t.Fatalf("the sandbox is in the host's user namespace %s", hostNS)
		}
		// CAP_SYS_ADMIN is bit 21: not held, and even a new user
		// namespace's (if seccomp let one be made) would not reach the
		// host's mount namespace.
		capEff := trim(run(t, one, "grep CapEff /proc/self/status | cut -f2"))
		if v, err := strconv.ParseUint(capEff, 16, 64); err != nil || v&(1<<21) != 0 {
			t.Errorf("CapEff %q has CAP_SYS_ADMIN", capEff)
		}
		for _, probe := range []string{
			"mount -t tmpfs none /mnt",
			"unshare -U -m -r mount -t tmpfs none /mnt && nsenter -t 1 -m touch /usr/pwned",
			"nsenter -t 1 -U -m true",
		} {
			if code, out := exitOf(t, one, probe); code == 0 {
				t.Errorf("%q succeeded: %s", probe, out)
			}
		}
	})

	t.Run("sysfs shows the sandbox's network, not the host's", func(t *testing.T) {
		got := strings.Fields(run(t, one, "ls /sys/class/net"))
		for _, n := range got {
			if n != "lo" && n != "eth0" {
				t.Errorf("/sys/class/net lists %s (host or another sandbox): %v", n, got)
			}
		}
	})

	t.Run("session users map into the range", func(t *testing.T) {
		out := trim(run(t, one, "id -u", client.InSession(mustUserSession(t, one, "alice"))))
		if out == "0" || out == "" {
			t.Fatalf("alice's id -u = %q", out)
		}
		uid, _ := strconv.Atoi(out)
		p, err := one.StartProcess(ctxT(t, 60*time.Second), "exec sleep 2718", client.AsUser("alice"))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Kill(ctxT(t, 10*time.Second), "KILL")
		if host := hostUIDOf(t, "sleep 2718"); host != int(iso1.HostUIDBase)+uid {
			t.Errorf("alice (%d) runs as host UID %d, want %d", uid, host, int(iso1.HostUIDBase)+uid)
		}
	})

	t.Run("a fork maps its parent's files into its own range", func(t *testing.T) {
		ctx := ctxT(t, 2*time.Minute)
		run(t, one, "mkdir -p /workspace/f && echo data > /workspace/f/root-file && touch /workspace/f/alice-file && chown alice: /workspace/f/alice-file")
		if _, err := one.Snapshot(ctx, "userns-snap", client.SnapshotOptions{}); err != nil {
			t.Fatal(err)
		}
		fork := d.Client.Sandbox("userns-fork", client.WithFromSnapshot("userns-snap"))
		iso := isolationOf(t, fork)
		if !iso.UserNamespace || iso.HostUIDBase == iso1.HostUIDBase || iso.HostUIDBase == iso2.HostUIDBase {
			t.Fatalf("fork's isolation %+v, want a range of its own", iso)
		}
		got := trim(run(t, fork, "stat -c %U /workspace/f/root-file /workspace/f/alice-file; echo more >> /workspace/f/root-file && cat /workspace/f/root-file"))
		if got != "root\nalice\ndata\nmore" {
			t.Errorf("in the fork: %q, want the files root's and alice's, writable", got)
		}
		if err := fork.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the range survives a restart and is freed on destroy", func(t *testing.T) {
		d.Restart(t)
		if got := isolationOf(t, one); got != iso1 {
			t.Errorf("after restart: %+v, want %+v", got, iso1)
		}
		run(t, one, "true")
		if err := two.Destroy(ctxT(t, 60*time.Second)); err != nil {
			t.Fatal(err)
		}
		three := d.Client.Sandbox("userns-three")
		if got := isolationOf(t, three); got.HostUIDBase != iso2.HostUIDBase {
			t.Errorf("a new sandbox got %d, want the destroyed one's free range %d", got.HostUIDBase, iso2.HostUIDBase)
		}
	})
}

// mustUserSession makes a session running as user and returns its ID.
func mustUserSession(t *testing.T, sb *client.Sandbox, user string) string {
	t.Helper()
	s, err := sb.CreateSession(ctxT(t, 60*time.Second), client.AsUser(user))
	if err != nil {
		t.Fatal(err)
	}
	return s.ID()
}

// TestUserNamespacesOffAndOlderSandboxes: with --userns=false sandboxes
// run as before (info says so); turned on, a sandbox made before keeps
// running as it was made, and new ones get a user namespace.
func TestUserNamespacesOffAndOlderSandboxes(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--userns=false"}})
	old := d.Client.Sandbox("made-without")
	if iso := isolationOf(t, old); iso.UserNamespace || iso.HostUIDBase != 0 {
		t.Fatalf("--userns=false: %+v", iso)
	}
	if got := trim(run(t, old, "cat /proc/self/uid_map")); !strings.HasPrefix(strings.Join(strings.Fields(got), " "), "0 0 4294967295") {
		t.Errorf("--userns=false: uid_map %q, want the host's", got)
	}
	run(t, old, "echo kept > /root/file")
	if !strings.Contains(d.Logs(), "user namespaces are off") {
		t.Error("the daemon did not say user namespaces are off")
	}

	d.AddArgs("--userns=true")
	d.Restart(t)
	if _, err := old.Stop(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := trim(run(t, old, "cat /root/file; touch /root/again && echo ok")); got != "kept\nok" {
		t.Errorf("the older sandbox after a restart with user namespaces: %q", got)
	}
	if iso := isolationOf(t, old); iso.UserNamespace {
		t.Errorf("the older sandbox now says %+v; it runs as it was made", iso)
	}
	if iso := isolationOf(t, d.Client.Sandbox("made-with")); !iso.UserNamespace {
		t.Errorf("a new sandbox: %+v, want a user namespace", iso)
	}
}
