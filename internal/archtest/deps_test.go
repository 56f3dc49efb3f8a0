// Package archtest checks the dependency rules of STYLE.md: the public
// packages import nothing internal, and the agent, which is bind-mounted
// into every sandbox, stays small and static.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestDependencyRules(t *testing.T) {
	const mod = "github.com/sandboxd/sandboxd/"
	rules := []struct {
		pkg       string
		forbidden []string
	}{
		{mod + "api/...", []string{mod + "internal/", mod + "client"}},
		{mod + "client/...", []string{mod + "internal/"}},
		{mod + "cmd/sandbox-agent", []string{
			"database/sql", "modernc.org/", "github.com/google/go-containerregistry",
			"github.com/spf13/cobra", "github.com/containerd/", "github.com/opencontainers/",
			"github.com/vishvananda/", mod + "internal/store", mod + "internal/sandbox",
			mod + "internal/httpapi", mod + "internal/runtime", mod + "internal/network", mod + "client",
			mod + "internal/kube", // the cluster client (and kubenode, kubetest)
		}},
	}
	for _, r := range rules {
		for _, d := range deps(t, r.pkg) {
			for _, f := range r.forbidden {
				if strings.HasPrefix(d, f) {
					t.Errorf("%s depends on %s (forbidden: %s)", r.pkg, d, f)
				}
			}
		}
	}
}

// TestAgentIsStatic builds the agent the way `make build` does and checks
// it has no dynamic dependencies, so it runs in any image (glibc, musl,
// busybox).
func TestAgentIsStatic(t *testing.T) {
	bin := t.TempDir() + "/agent"
	cmd := exec.Command("go", "build", "-o", bin, "../../cmd/sandbox-agent")
	cmd.Env = append(cmd.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the agent: %v\n%s", err, out)
	}
	out, _ := exec.Command("file", bin).Output()
	if len(out) > 0 && !strings.Contains(string(out), "statically linked") {
		t.Errorf("agent is not static: %s", out)
	}
	if out, err := exec.Command("ldd", bin).CombinedOutput(); err == nil && !strings.Contains(string(out), "not a dynamic executable") {
		t.Errorf("agent has dynamic dependencies:\n%s", out)
	}
}
