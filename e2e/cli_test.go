package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// cli runs the real `sandbox` binary against d and returns stdout, stderr
// and the exit code.
func cli(t *testing.T, d *testdaemon.Daemon, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(testdaemon.BinDir(t), "sandbox"), append([]string{"--url", d.URL, "--token", d.Token}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestCLITour is the README's tour, through the real CLI.
func TestCLITour(t *testing.T) {
	d := daemon(t)
	start := time.Now()
	out, errOut, code := cli(t, d, "", "exec", "demo", "--", "python3", "-c", "print(2+2)")
	if out != "4\n" || code != 0 {
		t.Fatalf("sandbox exec demo -- python3 -c 'print(2+2)': %q %q exit %d", out, errOut, code)
	}
	t.Logf("first exec, creating the sandbox: %v", time.Since(start))
	cli(t, d, "", "exec", "demo", "--", "cd /tmp && export NAME=world")
	if out, _, _ := cli(t, d, "", "exec", "demo", "--", "echo hello $NAME from $(pwd)"); out != "hello world from /tmp\n" {
		t.Errorf("shell state through the CLI: %q", out)
	}
	if _, _, code := cli(t, d, "", "exec", "demo", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exit code through the CLI = %d, want 7", code)
	}
	if _, errOut, code := cli(t, d, "", "exec", "--timeout", "300ms", "demo", "--", "sleep", "10"); code != 124 || !strings.Contains(errOut, "COMMAND_TIMEOUT") {
		t.Errorf("timeout through the CLI: exit %d, stderr %q", code, errOut)
	}
	if out, _, _ := cli(t, d, "abc", "exec", "-i", "demo", "--", "tr", "a-z", "A-Z"); out != "ABC" {
		t.Errorf("stdin through the CLI: %q", out)
	}
	if out, _, code := cli(t, d, "", "ls"); code != 0 || !strings.Contains(out, "demo") || !strings.Contains(out, "running") {
		t.Errorf("sandbox ls: %q", out)
	}
	if out, _, code := cli(t, d, "", "info", "demo"); code != 0 || !strings.Contains(out, "Sleeps:") {
		t.Errorf("sandbox info: %q", out)
	}
	if out, _, code := cli(t, d, "", "stop", "demo"); code != 0 || !strings.Contains(out, "stopped") {
		t.Errorf("sandbox stop: %q", out)
	}
	if out, _, code := cli(t, d, "", "start", "demo"); code != 0 || !strings.Contains(out, "running") {
		t.Errorf("sandbox start: %q", out)
	}
	// The README's offline sandbox and preview link.
	if _, errOut, code := cli(t, d, "", "create", "offline", "--network", "none", "--memory", "256Mi", "--pids", "128"); code != 0 {
		t.Errorf("sandbox create offline --network none --memory 256Mi --pids 128: exit %d %s", code, errOut)
	}
	if out, _, _ := cli(t, d, "", "exec", "offline", "--", "ls", "/sys/class/net"); out != "lo\n" {
		t.Errorf("ls /sys/class/net in the offline sandbox: %q, want lo", out)
	}
	if out, _, code := cli(t, d, "", "info", "offline", "--json"); code != 0 || !strings.Contains(out, `"memoryBytes": 268435456`) || !strings.Contains(out, `"pids": 128`) {
		t.Errorf("sandbox info offline --json: exit %d %s", code, out)
	}
	// expose's own --token is the URL's token: the API token comes from
	// the environment, as in the README (or the token file).
	expose := exec.Command(filepath.Join(testdaemon.BinDir(t), "sandbox"), "--url", d.URL, "expose", "demo", "8000")
	expose.Env = append(os.Environ(), "SANDBOX_TOKEN="+d.Token)
	if out, err := expose.Output(); err != nil || !regexp.MustCompile(`^http://8000-demo-[a-z0-9]+\.localhost(:\d+)?/\n$`).Match(out) {
		t.Errorf("sandbox expose demo 8000: %v %q", err, out)
	}
	if _, _, code := cli(t, d, "", "rm", "offline"); code != 0 {
		t.Errorf("sandbox rm offline: exit %d", code)
	}
	if _, errOut, code := cli(t, d, "", "info", "Not_Valid"); code != 125 || !strings.Contains(errOut, "INVALID_SANDBOX_ID") {
		t.Errorf("invalid ID: exit %d %q", code, errOut)
	}
	if _, _, code := cli(t, d, "", "rm", "demo"); code != 0 {
		t.Errorf("sandbox rm: exit %d", code)
	}
	if _, errOut, code := cli(t, d, "", "info", "demo"); code != 125 || !strings.Contains(errOut, "SANDBOX_NOT_FOUND") {
		t.Errorf("info after rm: exit %d %q", code, errOut)
	}
}
