package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestRequestIDAndJSONLogs: with --log-format json every log line is a JSON
// object; a request's X-Request-Id comes back in the response and appears
// in the daemon's log lines and in the agent's, which is where a command
// killed on its timeout is recorded.
func TestRequestIDAndJSONLogs(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--log-format", "json"}})
	sb := d.Client.Sandbox("rid")
	run(t, sb, "true") // created, so that the next call is only the exec

	const id = "e2e-request-1"
	req, err := http.NewRequestWithContext(ctxT(t, time.Minute), "POST", d.URL+"/v1/sandboxes/rid/exec",
		strings.NewReader(`{"command":"sleep 60","timeout":500}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.Token)
	req.Header.Set("X-Request-Id", id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("X-Request-Id"); got != id {
		t.Errorf("X-Request-Id %q in the response, want the caller's %q", got, id)
	}
	if !strings.Contains(string(body), "COMMAND_TIMEOUT") {
		t.Errorf("exec past its timeout answered %d %s", resp.StatusCode, body)
	}

	// A request without an ID gets one.
	resp, err = http.Get(d.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id on a request that sent none")
	}

	// The request's line is written as its handler returns, and reaches
	// the test through a pipe: it may come a moment after the answer.
	logged := func() bool {
		for _, line := range strings.Split(strings.TrimSpace(d.Logs()), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["request_id"] == id {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !logged() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !logged() {
		t.Errorf("no daemon log line with request_id %q", id)
	}
	for _, line := range strings.Split(strings.TrimSpace(d.Logs()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("a log line is not JSON: %q", line)
		}
	}
	agentLogs, _ := filepath.Glob(filepath.Join(d.StateDir, "sandboxes", "*", "agent.log"))
	waitFor(t, 30*time.Second, func() bool {
		for _, p := range agentLogs {
			if data, _ := os.ReadFile(p); strings.Contains(string(data), "request_id="+id) {
				return true
			}
		}
		return false
	}, "the request ID in the agent's log "+strings.Join(agentLogs, ", "))
}
