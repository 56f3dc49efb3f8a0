package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoInternalImports keeps the dependency rule: the SDK is public and
// must build outside this module, so nothing it depends on may be internal.
func TestNoInternalImports(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found:", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/sandboxd/sandboxd/internal") {
			t.Errorf("client depends on %s", pkg)
		}
	}
}
