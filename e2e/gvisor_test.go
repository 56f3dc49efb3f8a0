package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
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
