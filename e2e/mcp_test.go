package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// mcpClientDir holds the TypeScript test of the MCP server, with the
// official MCP client pinned by its package-lock.json.
const mcpClientDir = "testdata/mcpclient"

// TestMCP drives both MCP transports, `sandbox mcp` (stdio) and the
// daemon's /mcp (streamable HTTP, with the token), with the official
// TypeScript MCP client (@modelcontextprotocol/sdk): it lists the tools,
// calls each one against a real daemon, and checks that a matplotlib
// chart comes back as an image (testdata/mcpclient/mcp.test.mjs).
func TestMCP(t *testing.T) {
	needCodeRuntimes(t)
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("needs npm (.ci/run installs it) for the TypeScript MCP client")
	}
	installNPMPackages(t, mcpClientDir)
	d := daemon(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-reporter=tap", "mcp.test.mjs")
	cmd.Dir = mcpClientDir
	cmd.Env = append(os.Environ(),
		"SANDBOX_URL="+d.URL, "SANDBOX_TOKEN="+d.Token,
		"SANDBOX_CLI="+filepath.Join(testdaemon.BinDir(t), "sandbox"),
		"MCP_ID_PREFIX=mcp",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("node --test mcp.test.mjs:\n%s", out.String())
	if err != nil {
		t.Fatalf("the TypeScript MCP client's tests failed: %v", err)
	}
	// Guard against a run that passed because it ran nothing.
	if m := regexp.MustCompile(`(?m)^# pass (\d+)$`).FindStringSubmatch(out.String()); m == nil || m[1] == "0" {
		t.Fatalf("node --test reported no passing tests")
	}
}

// installNPMPackages runs `npm ci` in dir unless node_modules already
// holds what package-lock.json pins. scripts/deps.sh test does the same
// (make test runs it first); the stamp is the one it writes, the lock
// file's cksum, so either may install and the other then does nothing.
func installNPMPackages(t *testing.T, dir string) {
	t.Helper()
	lock, err := os.Open(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	cksum := exec.Command("cksum")
	cksum.Stdin = lock
	sum, err := cksum.Output()
	if err != nil {
		t.Fatalf("cksum of %s/package-lock.json: %v", dir, err)
	}
	stamp := filepath.Join(dir, "node_modules", ".installed")
	if got, err := os.ReadFile(stamp); err == nil && bytes.Equal(got, sum) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	if err := os.WriteFile(stamp, sum, 0o644); err != nil {
		t.Fatal(err)
	}
}
