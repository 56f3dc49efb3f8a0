package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// The TypeScript and Python SDKs are tested by their own suites (node
// --test, pytest) against a real daemon that this harness starts, so both
// run in `make test` on the project's own binaries. The suites find the
// daemon through SANDBOX_URL and SANDBOX_TOKEN, as a user's program would.

// repoRoot is the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test's source file")
	}
	return filepath.Dir(filepath.Dir(file))
}

// runSuite runs an SDK's test command against d in dir and fails with its
// output (and the daemon's last words) when it fails.
func runSuite(t *testing.T, d *testdaemon.Daemon, dir string, timeout time.Duration, name string, args ...string) {
	t.Helper()
	if err := runIn(t, dir, timeout, []string{"SANDBOX_URL=" + d.URL, "SANDBOX_TOKEN=" + d.Token}, name, args...); err != nil {
		t.Fatalf("%s %v: %v (daemon log tail:\n%s)", name, args, err, tail(d.Logs(), 4000))
	}
}

// runIn runs a command in dir with env added, logging its output.
func runIn(t *testing.T, dir string, timeout time.Duration, env []string, name string, args ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	// No bytecode caches in the source tree.
	cmd.Env = append(append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1"), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("%s %v:\n%s", name, args, out.String())
	return err
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestSDKTypeScript builds @sandboxd/sdk with its pinned TypeScript
// (package-lock.json) and runs its node --test suite.
func TestSDKTypeScript(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real sandboxes")
	}
	testdaemon.SkipUnlessRoot(t)
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: scripts/deps.sh installs it (nodejs, npm)", tool)
		}
	}
	dir := filepath.Join(repoRoot(t), "sdk", "typescript")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".bin", "tsc")); err != nil {
		if err := runIn(t, dir, 5*time.Minute, nil, "npm", "ci", "--no-audit", "--no-fund"); err != nil {
			t.Fatalf("npm ci: %v", err)
		}
	}
	if err := runIn(t, dir, 5*time.Minute, nil, "npm", "run", "build"); err != nil {
		t.Fatalf("building the SDK: %v", err)
	}
	checkPackage(t, dir)
	d := testdaemon.Start(t, testdaemon.Options{})
	args := []string{"--test", "--test-concurrency=1", "test/"}
	// Node 20 has WebSocket (for the terminal test) behind a flag.
	if exec.Command("node", "-e", `process.exit(typeof WebSocket === "function" ? 0 : 1)`).Run() != nil {
		args = append([]string{"--experimental-websocket"}, args...)
	}
	runSuite(t, d, dir, 20*time.Minute, "node", args...)

	// The tutorial's port type-checks against the SDK's declarations and
	// answers the default question.
	ex := filepath.Join(repoRoot(t), "examples", "ai-code-executor-ts")
	if err := runIn(t, ex, 5*time.Minute, nil, "npm", "ci", "--no-audit", "--no-fund"); err != nil {
		t.Fatalf("npm ci in the example: %v", err)
	}
	if err := runIn(t, ex, 5*time.Minute, nil, "npm", "run", "build"); err != nil {
		t.Fatalf("building the example: %v", err)
	}
	checkExecutor(t, d, ex, "node", "dist/index.js")
}

// checkPackage packs the SDK as npm publishes it and imports it, by its
// name, from a project that installed the tarball: the exports, the built
// files and the type declarations are in the package.
func checkPackage(t *testing.T, dir string) {
	t.Helper()
	tmp := t.TempDir()
	if err := runIn(t, dir, 5*time.Minute, nil, "npm", "pack", "--pack-destination", tmp); err != nil {
		t.Fatalf("npm pack: %v", err)
	}
	tgz, _ := filepath.Glob(filepath.Join(tmp, "sandboxd-sdk-*.tgz"))
	if len(tgz) != 1 {
		t.Fatalf("npm pack made %v", tgz)
	}
	app := filepath.Join(tmp, "app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "package.json"), []byte(`{"name":"app","private":true,"type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runIn(t, app, 5*time.Minute, nil, "npm", "install", "--no-audit", "--no-fund", "--offline", tgz[0]); err != nil {
		t.Fatalf("installing the packed SDK: %v", err)
	}
	for _, f := range []string{"dist/index.js", "dist/index.d.ts", "README.md"} {
		if _, err := os.Stat(filepath.Join(app, "node_modules", "@sandboxd", "sdk", f)); err != nil {
			t.Errorf("the package lacks %s: %v", f, err)
		}
	}
	probe := `import { SandboxClient, getSandbox, NotFoundError } from "@sandboxd/sdk";
const sb = getSandbox(new SandboxClient({ url: "http://127.0.0.1:1" }), "x");
if (typeof sb.exec !== "function" || !(new NotFoundError("X_NOT_FOUND", "m") instanceof Error)) process.exit(1);`
	if err := runIn(t, app, time.Minute, nil, "node", "--input-type=module", "-e", probe); err != nil {
		t.Fatalf("importing the packed SDK: %v", err)
	}
}

// checkExecutor runs an AI code executor example with its built-in answer
// and checks the JSON it prints: the 10th Fibonacci number, from a sandbox.
func checkExecutor(t *testing.T, d *testdaemon.Daemon, dir, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "SANDBOX_URL="+d.URL, "SANDBOX_TOKEN="+d.Token, "ANTHROPIC_API_KEY=", "PYTHONDONTWRITEBYTECODE=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	var got struct {
		Success bool   `json:"success"`
		Output  string `json:"output"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s %v printed no JSON: %v\n%s", name, args, err, out)
	}
	if !got.Success || got.Output != "55\n" {
		t.Fatalf("%s %v: success %v, output %q; want true, \"55\\n\"", name, args, got.Success, got.Output)
	}
}

// TestSDKPython runs the Python SDK's pytest suite (Debian's python3-pytest)
// against the sources in sdk/python, sync and asyncio clients alike.
func TestSDKPython(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real sandboxes")
	}
	testdaemon.SkipUnlessRoot(t)
	py := pythonWithPytest(t)
	dir := filepath.Join(repoRoot(t), "sdk", "python")
	d := testdaemon.Start(t, testdaemon.Options{})
	runSuite(t, d, dir, 20*time.Minute, py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
	checkExecutor(t, d, filepath.Join(repoRoot(t), "examples", "ai-code-executor-py"), py, "main.py")
}

// pythonWithPytest is Debian's python3 (which python3-pytest extends), else
// the first python3 on PATH that can import pytest.
func pythonWithPytest(t *testing.T) string {
	t.Helper()
	for _, c := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(c, "-c", "import pytest").Run() == nil {
			return c
		}
	}
	t.Fatal("no python3 with pytest: scripts/deps.sh test installs python3-pytest")
	return ""
}
