package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// doctorReport is `sandboxd doctor --json` as a tool reads it.
type doctorReport struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Name     string `json:"name"`
		Status   string `json:"status"`
		Detail   string `json:"detail"`
		Fix      string `json:"fix"`
		Required bool   `json:"required"`
	} `json:"checks"`
}

// runDoctor runs the real binary and returns its report and exit code.
func runDoctor(t *testing.T, args ...string) (doctorReport, int) {
	t.Helper()
	bin := testdaemon.BinDir(t)
	args = append([]string{"doctor", "--json", "--agent", filepath.Join(bin, "sandbox-agent")}, args...)
	cmd := exec.Command(filepath.Join(bin, "sandboxd"), args...)
	out, err := cmd.Output()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r doctorReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("doctor --json printed something else than JSON (%v):\n%s", err, out)
	}
	return r, code
}

// TestDoctorJSON: the report names every check with ok, missing or warn, a
// fix for each problem, and exits 1 exactly when a required item is
// missing; a bad configuration is one of its findings.
func TestDoctorJSON(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	r, code := runDoctor(t, "--state-dir", t.TempDir())
	seen := map[string]bool{}
	for _, c := range r.Checks {
		seen[c.Name] = true
		if c.Status != "ok" && c.Status != "missing" && c.Status != "warn" {
			t.Errorf("check %s: status %q", c.Name, c.Status)
		}
		if c.Status != "ok" && c.Fix == "" {
			t.Errorf("check %s is %s without a fix", c.Name, c.Status)
		}
	}
	for _, name := range []string{"config", "cgroup", "overlayfs", "userns", "idmapped-mounts", "nftables",
		"ip-forward", "fuse", "oci-runtime", "gvisor", "disk", "inodes", "forward-firewall", "chromium"} {
		if !seen[name] {
			t.Errorf("no %s check in the report", name)
		}
	}
	if (code == 0) != r.OK {
		t.Errorf("exit code %d with ok=%v", code, r.OK)
	}
	if !r.OK {
		t.Logf("this host misses something required: %+v", r.Checks)
	}

	bad, code := runDoctor(t, "--state-dir", "relative/dir")
	if bad.OK || code != 1 || bad.Checks[0].Name != "config" || bad.Checks[0].Status != "missing" ||
		!strings.Contains(bad.Checks[0].Detail, "--state-dir") {
		t.Errorf("a relative --state-dir: exit %d, report %+v; want exit 1 and a missing config check naming --state-dir", code, bad)
	}
}

// TestDaemonLogsHostProblems: at start the daemon logs one line for each
// problem the doctor finds (the development-only ones aside) and none for
// what is ok.
func TestDaemonLogsHostProblems(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	r, _ := runDoctor(t, "--state-dir", t.TempDir())
	d := daemon(t)
	logs := d.Logs()
	for _, c := range r.Checks {
		if c.Name == "chromium" || c.Name == "config" {
			continue
		}
		line := "host check: " + c.Name + " "
		n := strings.Count(logs, line)
		switch {
		case c.Status == "ok" && n != 0:
			t.Errorf("the daemon logged %q although the doctor found it ok", line)
		case c.Status != "ok" && n != 1:
			t.Errorf("the doctor found %s %s, the daemon logged it %d times; want once", c.Name, c.Status, n)
		}
	}
}
