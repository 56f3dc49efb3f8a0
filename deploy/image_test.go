// Package deploy holds the test of the container image the manifests in
// deploy/kubernetes run. It is a package of its own so that `go test ./...`
// builds the image beside the e2e suite instead of after it.
package deploy

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestMakeImage builds sandboxd's container image as `make image` does
// (scripts/image.sh) and checks what the deploy/kubernetes manifests rely
// on: sandboxd runs from the image and is its entry point, sandbox-agent
// sits beside it, and the tools a node runs (crun, nft, lxcfs) and its
// sandboxes' host image (python3) are there. The first build on a machine
// downloads the Debian packages (minutes) and makes the base image from
// them (minutes more); after that both are cached, the base image in a
// buildah storage kept for this test (testStorage), and a build only adds
// the binaries. It writes no OCI archive (ARCHIVE=): compressing 1.4 GB
// costs minutes and tests buildah, not sandboxd.
func TestMakeImage(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	if testing.Short() {
		t.Skip("builds a 1.4 GB image: minutes")
	}
	for _, tool := range []string{"buildah", "mmdebstrap"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (scripts/deps.sh run installs it)", tool)
		}
	}
	storage := []string{"--root", testStorage, "--runroot", testRunRoot}
	buildah := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("buildah", append(storage, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// A name of this run's own: another run may share the storage.
	image := "sandboxd-test-" + strconv.Itoa(os.Getpid()) + ":dev"
	t.Cleanup(func() {
		exec.Command("buildah", append(storage, "rmi", "--force", image)...).Run()
	})
	cmd := exec.Command("scripts/image.sh", testdaemon.BinDir(t))
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "BUILDAH_ROOT="+testStorage, "BUILDAH_RUNROOT="+testRunRoot, "IMAGE="+image)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}

	if got := buildah("inspect", "--type", "image", "--format", "{{.OCIv1.Config.Entrypoint}}", image); got != "[/usr/local/bin/sandboxd]" {
		t.Errorf("entry point %s", got)
	}
	ctr := buildah("from", "--quiet", image)
	t.Cleanup(func() { exec.Command("buildah", append(storage, "rm", ctr)...).Run() })
	run := func(args ...string) string {
		t.Helper()
		return buildah(append([]string{"run", "--isolation", "chroot", ctr, "--"}, args...)...)
	}
	if got := run("sandboxd", "--version"); !strings.HasPrefix(got, "sandboxd ") {
		t.Errorf("sandboxd --version in the image: %q", got)
	}
	if got := run("sh", "-c", "sandboxd gateway --help 2>&1 || true"); !strings.Contains(got, "-kubeconfig") {
		t.Errorf("sandboxd gateway --help in the image: %q", got)
	}
	// What a node runs, and its sandboxes' host image.
	if got := run("sh", "-c", "ls /usr/local/bin/sandbox-agent && for c in crun runc nft lxcfs python3 ip; do command -v $c; done"); strings.Count(got, "\n") != 6 {
		t.Errorf("tools in the image:\n%s", got)
	}
}

// The buildah storage the test builds in, kept from one run to the next
// beside scripts/image.sh's root file system cache: its base image (the
// 1.4 GB root, sandboxd-base:KEY) is made once, and a run adds and removes
// only its own image and container. Not buildah's default storage, which
// is the operator's.
const (
	testStorage = "/var/cache/sandboxd/image/buildah-test"
	testRunRoot = "/run/sandboxd-image-test"
)
