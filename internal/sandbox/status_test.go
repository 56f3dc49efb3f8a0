package sandbox

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLifecycleTable checks the shape of the state machine: every status
// has one row, every edge ends at a known status, every status can be
// destroyed, and nothing leaves destroying but a retried destroy.
func TestLifecycleTable(t *testing.T) {
	seen := map[Status]bool{}
	for _, row := range lifecycle {
		if seen[row.status] {
			t.Errorf("status %q has two rows", row.status)
		}
		seen[row.status] = true
	}
	for _, row := range lifecycle {
		for _, to := range row.next {
			if !seen[to] {
				t.Errorf("%s → %s: unknown status %q", row.status, to, to)
			}
		}
		if !CanChange(row.status, StatusDestroying) {
			t.Errorf("%s cannot be destroyed", row.status)
		}
	}
	for _, to := range Statuses() {
		if CanChange(StatusDestroying, to) != (to == StatusDestroying) {
			t.Errorf("destroying → %s allowed = %v", to, CanChange(StatusDestroying, to))
		}
	}
	if CanChange("", StatusRunning) || CanChange("paused-by-a-newer-daemon", StatusRunning) {
		t.Error("an unknown status may change")
	}
}

// TestLifecycleTransitions names the changes that were bugs before the
// table existed, and the ones the manager relies on.
func TestLifecycleTransitions(t *testing.T) {
	tests := []struct {
		from, to Status
		want     bool
	}{
		{StatusCreating, StatusRunning, true},
		{StatusCreating, StatusSleeping, true}, // recovery after a crash mid-create
		{StatusRunning, StatusSleeping, true},
		{StatusRunning, StatusStopped, true},
		{StatusRunning, StatusFailed, true},
		{StatusSleeping, StatusRunning, true},
		{StatusSleeping, StatusStopped, true},
		{StatusStopped, StatusRunning, true},
		{StatusFailed, StatusRunning, true},
		{StatusFailed, StatusFailed, true}, // a retried start failed again
		{StatusFailed, StatusStopped, false},
		{StatusCreating, StatusStopped, false},
		{StatusDestroying, StatusRunning, false},
		{StatusRunning, StatusRunning, false},
		{StatusStopped, StatusSleeping, false},
		{StatusRunning, StatusCreating, false},
	}
	for _, tt := range tests {
		if got := CanChange(tt.from, tt.to); got != tt.want {
			t.Errorf("CanChange(%s, %s) = %v, want %v", tt.from, tt.to, got, tt.want)
		}
	}
}

func statusStrings() []string {
	var out []string
	for _, s := range Statuses() {
		out = append(out, string(s))
	}
	return out
}

// TestAPIStatusesMatchLifecycle keeps api.SandboxStatus's constants the
// same set as the lifecycle's statuses: the wire type is read from
// api/sandbox.go's source, so a constant added there alone is caught.
func TestAPIStatusesMatchLifecycle(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../../api/sandbox.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var wire []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "SandboxStatus" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok {
					t.Fatalf("a SandboxStatus constant is not a string literal: %#v", v)
				}
				s, _ := strconv.Unquote(lit.Value)
				wire = append(wire, s)
			}
		}
	}
	if diff := cmp.Diff(statusStrings(), wire); diff != "" {
		t.Errorf("api.SandboxStatus constants differ from the lifecycle (-lifecycle +api):\n%s", diff)
	}
}

// TestTypeScriptStatusesMatchLifecycle keeps the TypeScript SDK's
// SandboxStatus union the lifecycle's statuses.
func TestTypeScriptStatusesMatchLifecycle(t *testing.T) {
	data, err := os.ReadFile("../../sdk/typescript/src/types.ts")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`export type SandboxStatus\s*=\s*([^;]+);`).FindSubmatch(data)
	if m == nil {
		t.Fatal("types.ts has no SandboxStatus union")
	}
	var ts []string
	for _, part := range strings.Split(string(m[1]), "|") {
		s, err := strconv.Unquote(strings.TrimSpace(part))
		if err != nil {
			t.Fatalf("SandboxStatus member %q is not a string literal", part)
		}
		ts = append(ts, s)
	}
	if diff := cmp.Diff(statusStrings(), ts); diff != "" {
		t.Errorf("types.ts SandboxStatus differs from the lifecycle (-lifecycle +typescript):\n%s", diff)
	}
}
