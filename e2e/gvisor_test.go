package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
	"github.com/sandboxd/sandboxd/internal/testgit"
)

// TestRuntimeIsChosenPerSandbox: one daemon runs a sandbox on the host's
// kernel and one on gVisor, side by side; info, ls and health say which.
// An instance type may name the runtime (--instance-type-runtimes).
func TestRuntimeIsChosenPerSandbox(t *testing.T) {
	requireGVisor(t)
	testdaemon.SkipUnlessRoot(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--instance-type-runtimes", "lite=gvisor"}})
	ctx := ctxT(t, 2*time.Minute)
	h, err := d.Client.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(h.Runtimes, "gvisor") || (h.Runtime != "crun" && h.Runtime != "runc") {
		t.Fatalf("health: runtime %q, runtimes %v; want crun or runc by default and gvisor available", h.Runtime, h.Runtimes)
	}
	native := d.Client.Sandbox("native")
	if _, stderr, code := cli(t, d, "", "create", "--runtime", "gvisor", "gv"); code != 0 {
		t.Fatalf("sandbox create --runtime gvisor: exit %d: %s", code, stderr)
	}
	gv := d.Client.Sandbox("gv")
	if out := run(t, native, "dmesg 2>&1 | head -1; uname -r"); strings.Contains(out, "gVisor") {
		t.Errorf("the default sandbox runs on gVisor: %s", out)
	}
	if out := run(t, gv, "dmesg | head -1; uname -r"); !strings.Contains(out, "gVisor") {
		t.Errorf("the gvisor sandbox does not run on gVisor: %s", out)
	}
	for id, want := range map[string]string{"native": h.Runtime, "gv": "gvisor"} {
		info, err := d.Client.Sandbox(id).Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Runtime != want {
			t.Errorf("info %s: runtime %q, want %q", id, info.Runtime, want)
		}
	}
	out, _, _ := cli(t, d, "", "ls")
	if !regexp.MustCompile(`(?m)^gv\s+running\s+host\s+gvisor\s`).MatchString(out) {
		t.Errorf("sandbox ls does not show the runtime:\n%s", out)
	}
	_, err = d.Client.Sandbox("bad", client.WithRuntime("docker")).Ensure(ctx)
	if !isCode(err, api.CodeValidationFailed) {
		t.Errorf("runtime docker: %v, want VALIDATION_FAILED", err)
	}

	t.Run("an instance type names its runtime", func(t *testing.T) {
		if _, stderr, code := cli(t, d, "", "create", "--instance-type", "lite", "gv-lite"); code != 0 {
			t.Fatalf("sandbox create --instance-type lite: exit %d: %s", code, stderr)
		}
		// A sandbox's own runtime wins over its instance type's.
		if _, err := d.Client.Sandbox("lite-own", client.WithInstanceType("lite"), client.WithRuntime(h.Runtime)).Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[string]string{"gv-lite": "gvisor", "lite-own": h.Runtime} {
			info, err := d.Client.Sandbox(id).Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.Runtime != want || info.InstanceType != "lite" {
				t.Errorf("%s: runtime %q, instance type %q; want %q, lite", id, info.Runtime, info.InstanceType, want)
			}
		}
		if out := run(t, d.Client.Sandbox("gv-lite"), "dmesg | head -1"); !strings.Contains(out, "gVisor") {
			t.Errorf("the lite sandbox does not run on gVisor: %s", out)
		}
	})
}

// TestGVisorUnavailable: without a working runsc the daemon serves its
// other sandboxes, logs why once, and gvisor sandboxes get a clear code;
// a daemon told to default to gvisor refuses to start.
func TestGVisorUnavailable(t *testing.T) {
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--runsc", "/nonexistent/runsc"}})
	ctx := ctxT(t, time.Minute)
	_, err := d.Client.Sandbox("gv", client.WithRuntime("gvisor")).Ensure(ctx)
	if !isCode(err, api.CodeRuntimeUnavailable) || !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("gvisor sandbox without runsc: %v, want RUNTIME_UNAVAILABLE", err)
	}
	if _, err := d.Client.Sandbox("gv").Info(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the refused sandbox exists: %v", err)
	}
	run(t, d.Client.Sandbox("native"), "true")
	if n := strings.Count(d.Logs(), "gVisor is not available"); n != 1 {
		t.Errorf("the daemon logged %d lines about gVisor being unavailable, want 1:\n%s", n, d.Logs())
	}

	bin := testdaemon.BinDir(t)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "sandboxd"), "--state-dir", t.TempDir(), "--run-dir", shortTempDir(t),
		"--listen", "127.0.0.1:0", "--agent", filepath.Join(bin, "sandbox-agent"),
		"--runsc", "/nonexistent/runsc", "--default-runtime", "gvisor")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--default-runtime gvisor") {
		t.Errorf("daemon with --default-runtime gvisor and no runsc: %v, output:\n%s", err, out)
	}
}

// requireGVisor skips a test when bin/runsc was not built (the test binary
// built its own sandboxd): make build always builds it, so under make test
// the gVisor tests run.
func requireGVisor(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(testdaemon.BinDir(t), "runsc")); err != nil {
		t.Skip("no runsc beside sandboxd: run through make test (make build builds bin/runsc)")
	}
}

func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("/tmp", "sbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func isCode(err error, code api.Code) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Code == code
}

// TestGVisorRunsWhatTheCoreTestsDoNot: the features issue 12 lists for a
// gVisor sandbox that the core tests (forEachRuntime) do not cover, on one
// daemon whose default runtime is gvisor: both network modes, allowCidrs
// and allowHostCidrs, an imported image, a disk quota, git, backups (and
// the clear error of what gVisor cannot: restoring one into it) and
// `sandbox shell`.
func TestGVisorRunsWhatTheCoreTestsDoNot(t *testing.T) {
	requireGVisor(t)
	testdaemon.SkipUnlessRoot(t)
	// A network the host sits on, made before the daemon starts so that
	// the daemon blocks it (TestHostNetworksAreBlocked).
	neighbour := hostLAN(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--default-runtime", "gvisor"}})
	internet := client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet})
	ensure := func(t *testing.T, sb *client.Sandbox) *api.Sandbox {
		t.Helper()
		info, err := sb.Ensure(ctxT(t, 2*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if info.Runtime != "gvisor" {
			t.Fatalf("%s runs on %q, want gvisor", info.ID, info.Runtime)
		}
		return info
	}

	t.Run("network none has only loopback", func(t *testing.T) {
		sb := d.Client.Sandbox("gv-offline", client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone}))
		ensure(t, sb)
		if got := trim(run(t, sb, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")); got != "lo" {
			t.Errorf("interfaces = %q, want only lo", got)
		}
		out := run(t, sb, `python3 -c '
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
threading.Thread(target=lambda: srv.accept()[0].send(b"loop-ok"), daemon=True).start()
c = socket.create_connection(srv.getsockname()); print(c.recv(10).decode())'`)
		if trim(out) != "loop-ok" {
			t.Errorf("loopback: %q", out)
		}
	})

	closed := d.Client.Sandbox("gv-closed", internet)
	gw := ensure(t, closed).Network.Gateway
	hostPort := hostServer(t, gw)

	t.Run("the host is unreachable unless allowHostCidrs names it", func(t *testing.T) {
		if code, out := exitOf(t, closed, fmt.Sprintf(connectScript, gw, hostPort)); code != 3 {
			t.Errorf("host reachable without an allowlist (exit %d): %s", code, out)
		}
		open := d.Client.Sandbox("gv-host-open", client.WithNetwork(api.NetworkOptions{
			Mode: api.NetworkInternet, AllowHostCIDRs: []string{gw + "/32"},
		}))
		ensure(t, open)
		if out := run(t, open, fmt.Sprintf(connectScript, gw, hostPort)); !strings.Contains(out, "hello-from-host") {
			t.Errorf("allowed host address not reachable: %s", out)
		}
	})

	t.Run("allowCidrs opens what it names and never another sandbox or the host", func(t *testing.T) {
		probe := fmt.Sprintf(connectScript, neighbour, 8124)
		if code, out := exitOf(t, closed, probe); code != 3 {
			t.Errorf("the host's own network reachable without allowCidrs (exit %d): %s", code, out)
		}
		allowed := d.Client.Sandbox("gv-lan-allowed", client.WithNetwork(api.NetworkOptions{
			Mode: api.NetworkInternet, AllowCIDRs: []string{neighbour + "/32"},
		}))
		ensure(t, allowed)
		if out := run(t, allowed, probe); !strings.Contains(out, "hello-from-lan") {
			t.Errorf("allowed neighbour not reachable: %s", out)
		}
		const port = 8123
		victim := closed
		victimAddr := ensure(t, victim).Network.Address
		run(t, victim, fmt.Sprintf(greeterScript, port))
		if out := run(t, victim, fmt.Sprintf(connectScript, victimAddr, port)); !strings.Contains(out, "hello-from-sandbox") {
			t.Fatalf("the victim's own server is not up: %s", out)
		}
		attacker := d.Client.Sandbox("gv-attacker", client.WithNetwork(api.NetworkOptions{
			Mode: api.NetworkInternet, AllowCIDRs: []string{"0.0.0.0/0"},
		}))
		attackerGW := ensure(t, attacker).Network.Gateway
		if code, out := exitOf(t, attacker, fmt.Sprintf(connectScript, victimAddr, port)); code != 3 {
			t.Errorf("another sandbox's port reachable with allowCidrs 0.0.0.0/0 (exit %d): %s", code, out)
		}
		if code, out := exitOf(t, attacker, fmt.Sprintf(connectScript, attackerGW, hostServer(t, attackerGW))); code != 3 {
			t.Errorf("a host port reachable with allowCidrs 0.0.0.0/0 (exit %d): %s", code, out)
		}
	})

	t.Run("git clone", func(t *testing.T) {
		srv := testgit.Start(t, gw+":0")
		sb := d.Client.Sandbox("gv-git", client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet, AllowHostCIDRs: []string{gw + "/32"}}))
		ensure(t, sb)
		res, err := sb.GitCheckout(ctxT(t, 3*time.Minute), srv.URL+"/public.git")
		if err != nil {
			t.Fatal(err)
		}
		if res.TargetDir != "/workspace/public" || res.Branch != "main" || len(res.Commit) != 40 {
			t.Errorf("result = %+v", res)
		}
		if got := trim(run(t, sb, "git -C /workspace/public rev-list --count HEAD")); got != "3" {
			t.Errorf("%s commits in the clone, want 3", got)
		}
	})

	t.Run("an imported image", func(t *testing.T) {
		if _, err := os.Stat("/bin/busybox"); err != nil {
			t.Skip("needs the static busybox of busybox-static at /bin/busybox")
		}
		importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin", "FROM_IMAGE=yes"}, WorkingDir: "/tmp"},
			layerOf(t, busyboxFiles(t)...)), "gv-busybox")
		sb := d.Client.Sandbox("gv-image", client.WithImage("gv-busybox"))
		ensure(t, sb)
		if got := trim(run(t, sb, "echo $0 $FROM_IMAGE; pwd; readlink /bin/ls")); got != "sh yes\n/tmp\nbusybox" {
			t.Errorf("busybox image on gVisor: %q", got)
		}
	})

	t.Run("a disk quota is ENOSPC inside", func(t *testing.T) {
		tiny := d.Client.Sandbox("gv-tiny-disk", client.WithLimits(api.Limits{DiskBytes: 64 << 20}))
		ensure(t, tiny)
		res, err := tiny.Exec(ctxT(t, 2*time.Minute), "head -c 100000000 /dev/zero > /workspace/big; echo exit=$?")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Stdout, "exit=1") || !strings.Contains(res.Stderr, "No space left") {
			t.Errorf("writing 100 MB into a 64 MiB disk: %+v", res)
		}
		run(t, tiny, "rm /workspace/big && echo ok > /workspace/small")
	})

	t.Run("a backup of a gVisor sandbox; restoring into one is UNSUPPORTED_BY_RUNTIME", func(t *testing.T) {
		if _, err := exec.LookPath("tar2sqfs"); err != nil {
			t.Skip("tar2sqfs (squashfs-tools-ng) not installed: run scripts/deps.sh")
		}
		ctx := ctxT(t, 3*time.Minute)
		src := d.Client.Sandbox("gv-backup")
		ensure(t, src)
		run(t, src, "mkdir -p /work/app && echo backed-up > /work/app/f")
		bk, err := src.Backup(ctx, "/work/app", client.BackupOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.RestoreBackup(ctx, bk.ID, "/work/restored")
		wantCode(t, "restoring a backup into a gVisor sandbox", err, api.CodeUnsupportedByRuntime)
		native := d.Client.Sandbox("native-restore", client.WithRuntime(mustHostRuntime(t, d)))
		if _, err := native.Ensure(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := native.RestoreBackup(ctx, bk.ID, ""); err != nil {
			t.Fatalf("restoring the gVisor sandbox's backup on the host's kernel: %v", err)
		}
		if got := trim(run(t, native, "cat /work/app/f")); got != "backed-up" {
			t.Errorf("restored file: %q", got)
		}
	})

	t.Run("sandbox shell", func(t *testing.T) {
		cmd := exec.CommandContext(ctxT(t, 2*time.Minute), filepath.Join(testdaemon.BinDir(t), "sandbox"), "shell", "gv-shell", "--terminal", "scripted")
		cmd.Env = append(os.Environ(), "SANDBOX_URL="+d.URL, "SANDBOX_TOKEN="+d.Token)
		cmd.Stdin = strings.NewReader("echo piped-$((2+3)); dmesg | head -1\nexit 4\n")
		out, err := cmd.Output()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.ExitCode() != 4 || !strings.Contains(string(out), "piped-5") || !strings.Contains(string(out), "gVisor") {
			t.Errorf("sandbox shell on gVisor: err %v, output %q", err, out)
		}
	})
}

// mustHostRuntime returns the runtime d runs on the host's kernel (crun or
// runc), whatever its default.
func mustHostRuntime(t *testing.T, d *testdaemon.Daemon) string {
	t.Helper()
	h, err := d.Client.Health(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range h.Runtimes {
		if rt == "crun" || rt == "runc" {
			return rt
		}
	}
	t.Fatalf("no host-kernel runtime in %v", h.Runtimes)
	return ""
}
