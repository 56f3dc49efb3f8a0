package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// resourcesScript prints, one per line: free's total MiB, nproc, Python's
// os.cpu_count(), the processors of /proc/cpuinfo, the cpuN lines of
// /proc/stat, and /proc/uptime's seconds.
const resourcesScript = `free -m | awk '/^Mem:/ {print $2}'; nproc; python3 -c 'import os; print(os.cpu_count())'
grep -c ^processor /proc/cpuinfo; grep -c '^cpu[0-9]' /proc/stat; cut -d' ' -f1 /proc/uptime`

type resources struct {
	memMiB, nproc, cpuCount, cpuinfo, stat int
	uptime                                 float64
}

func readResources(t *testing.T, sb *client.Sandbox) resources {
	t.Helper()
	f := strings.Fields(run(t, sb, resourcesScript))
	if len(f) != 6 {
		t.Fatalf("unexpected output: %q", f)
	}
	var r resources
	for i, p := range []*int{&r.memMiB, &r.nproc, &r.cpuCount, &r.cpuinfo, &r.stat} {
		n, err := strconv.Atoi(f[i])
		if err != nil {
			t.Fatalf("field %d of %q: %v", i, f, err)
		}
		*p = n
	}
	up, err := strconv.ParseFloat(f[5], 64)
	if err != nil {
		t.Fatalf("uptime %q: %v", f[5], err)
	}
	r.uptime = up
	return r
}

// TestSandboxSeesItsOwnResources: programs size their pools and caches from
// free, nproc and os.cpu_count(); inside a sandbox those must describe the
// sandbox (through lxcfs and a cpuset), not the host.
func TestSandboxSeesItsOwnResources(t *testing.T) {
	d := daemon(t)
	if !strings.Contains(d.Logs(), "lxcfs gives sandboxes their own /proc views") {
		t.Fatalf("the daemon did not start lxcfs (scripts/deps.sh installs it):\n%s", d.Logs())
	}
	sb := d.Client.Sandbox("small", client.WithLimits(api.Limits{MemoryBytes: 512 << 20, MilliCPU: 1000}))
	r := readResources(t, sb)
	// User code's cgroup keeps a little of the 512 MiB for the agent.
	if r.memMiB < 448 || r.memMiB > 512 {
		t.Errorf("free -m total = %d MiB, want the sandbox's 512 MiB (less the agent's share)", r.memMiB)
	}
	if r.nproc != 1 || r.cpuCount != 1 || r.cpuinfo != 1 || r.stat != 1 {
		t.Errorf("nproc %d, os.cpu_count() %d, /proc/cpuinfo %d, /proc/stat %d CPUs; want 1 each", r.nproc, r.cpuCount, r.cpuinfo, r.stat)
	}
	hostUp := readHostUptime(t)
	if r.uptime > 300 || (hostUp > 600 && r.uptime > hostUp-300) {
		t.Errorf("/proc/uptime = %.0f s (host: %.0f s), want the few seconds since the sandbox started", r.uptime, hostUp)
	}

	t.Logf("512Mi, 1 CPU: free %d MiB, nproc %d, os.cpu_count() %d, cpuinfo %d, stat %d, uptime %.1f s (host %.0f s)",
		r.memMiB, r.nproc, r.cpuCount, r.cpuinfo, r.stat, r.uptime, hostUp)

	t.Run("a non-root user sees them too", func(t *testing.T) {
		out := trim(run(t, sb, `setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "free -m | awk '/^Mem:/ {print \$2}'"`))
		if n, err := strconv.Atoi(out); err != nil || n > 512 {
			t.Errorf("free -m total as nobody = %q, want at most 512", out)
		}
	})

	t.Run("a restarted daemon keeps the views", func(t *testing.T) {
		d.Restart(t)
		if r := readResources(t, sb); r.nproc != 1 || r.memMiB > 512 {
			t.Errorf("after a daemon restart: %+v", r)
		}
	})
}

// TestGVisorSandboxSeesItsOwnResources: gVisor builds its own /proc, so
// its sandboxes get no LXCFS mounts; they must report the sandbox too.
func TestGVisorSandboxSeesItsOwnResources(t *testing.T) {
	d := daemon(t)
	h, err := d.Client.Health(ctxT(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(h.Runtimes, "gvisor") {
		t.Skip("skipping: runsc is not available (make build builds it)")
	}
	sb := d.Client.Sandbox("gv-small", client.WithOptions(api.SandboxOptions{
		Runtime: "gvisor", Limits: &api.Limits{MemoryBytes: 512 << 20, MilliCPU: 1000},
	}))
	r := readResources(t, sb)
	t.Logf("gVisor, 512Mi, 1 CPU: free %d MiB, nproc %d, os.cpu_count() %d, cpuinfo %d, stat %d, uptime %.1f s",
		r.memMiB, r.nproc, r.cpuCount, r.cpuinfo, r.stat, r.uptime)
	if r.memMiB > 512 || r.nproc != 1 || r.cpuCount != 1 || r.uptime > 300 {
		t.Errorf("gVisor sandbox sees %+v; want at most 512 MiB, 1 CPU, its own uptime", r)
	}
}

func readHostUptime(t *testing.T) float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	up, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return up
}

// TestSandboxesWorkWithoutLXCFS: a host whose lxcfs fails still runs
// sandboxes, and the daemon says why their /proc shows the host.
func TestSandboxesWorkWithoutLXCFS(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "lxcfs"), []byte("#!/bin/sh\necho 'broken on purpose' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d := testdaemon.Start(t, testdaemon.Options{Env: []string{"PATH=" + bin + ":" + os.Getenv("PATH")}})
	if logs := d.Logs(); !strings.Contains(logs, "lxcfs unavailable") || !strings.Contains(logs, "broken on purpose") {
		t.Errorf("no clear log line about lxcfs:\n%s", logs)
	}
	sb := d.Client.Sandbox("no-views", client.WithLimits(api.Limits{MemoryBytes: 512 << 20, MilliCPU: 1000}))
	r := readResources(t, sb)
	if r.nproc != 1 {
		t.Errorf("nproc = %d, want 1 (the cpuset does not need lxcfs)", r.nproc)
	}
}
