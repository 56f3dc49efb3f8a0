package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// e2bClientDir holds the E2B layer's test, with the official E2B JS SDK
// pinned by its package-lock.json.
const e2bClientDir = "testdata/e2bclient"

// TestE2B runs the unchanged E2B SDK (npm "e2b") against a real daemon's
// /e2b (testdata/e2bclient/e2b.test.mjs): sandbox lifecycle (create,
// connect, list with filters and paging, getInfo, setTimeout, timeouts
// that kill or pause, pause/resume, getMetrics, isRunning, kill),
// commands (foreground, streaming order, envs, cwd, users, timeouts,
// background handles, stdin, list, connect, kill), PTYs, files (read,
// write, list with depth, makeDir, exists, getInfo, rename, remove,
// watchDir, signed URLs), getHost and the host-routed envd name (signed
// URLs through it too), templates as sandboxd images, and the
// SDK's typed errors for unknown sandboxes, missing files, non-zero exits
// and timeouts, and tenants' API keys as E2B API keys that reach only
// their own sandboxes.
func TestE2B(t *testing.T) {
	if _, err := exec.LookPath("npm"); err != nil {
		t.Skip("needs npm (.ci/run installs it) for the E2B SDK")
	}
	installNPMPackages(t, e2bClientDir)
	testdaemon.SkipUnlessRoot(t)
	// A warm pool: E2B's create answers from it as sandboxd's does.
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--warm-pool", "2"}})
	// Two tenants' keys, E2B API keys of their own (auth › a tenant's key...).
	_, keyA := tenantClient(t, d, api.KeyCreateRequest{Name: "team-a"})
	_, keyB := tenantClient(t, d, api.KeyCreateRequest{Name: "team-b"})
	// A template is a sandboxd image (lifecycle › a template names...): a
	// busybox image with a file of its own.
	template := ""
	if _, err := os.Stat("/bin/busybox"); err == nil {
		template = "e2b-template"
		layer := layerOf(t, append(busyboxFiles(t), file{name: "etc/e2b-template", body: "from the template\n"})...)
		importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin"}}, layer), template)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-reporter=tap", "e2b.test.mjs")
	cmd.Dir = e2bClientDir
	cmd.Env = append(os.Environ(),
		"E2B_API_KEY="+d.Token, "E2B_API_URL="+d.URL+"/e2b", "E2B_SANDBOX_URL="+d.URL+"/e2b",
		"E2B_TEST_LISTEN="+strings.TrimPrefix(d.URL, "http://"),
		"E2B_DOMAIN=", "E2B_DEBUG=", "E2B_TENANT_KEY_A="+keyA, "E2B_TENANT_KEY_B="+keyB,
		"E2B_TEST_TEMPLATE="+template,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("node --test e2b.test.mjs:\n%s", out.String())
	if err != nil {
		t.Fatalf("the E2B SDK's tests failed: %v", err)
	}
	// Guard against a run that passed because it ran nothing.
	if m := regexp.MustCompile(`(?m)^# pass (\d+)$`).FindStringSubmatch(out.String()); m == nil || m[1] == "0" {
		t.Fatalf("node --test reported no passing tests")
	}
}
