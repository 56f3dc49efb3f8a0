package httpapi

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// TestOpenAPIDescribesEveryRoute keeps /v1/openapi.json in step with the
// routing table: every route is documented, and nothing is documented
// that is not routed.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method != "parameters" {
				documented[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	routed := map[string]bool{}
	for _, r := range (&Server{}).table() {
		if !strings.Contains(r.pattern, "{rest...}") {
			routed[r.pattern] = true
		}
	}
	// The agent's public routes are forwarded below /v1/sandboxes/{id};
	// its internal ones are the daemon's own business.
	for _, r := range agentapi.Routes {
		if r.Public {
			routed[r.Method+" /v1/sandboxes/{id}"+r.Path] = true
		}
	}
	for r := range routed {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for r := range documented {
		if !routed[r] {
			t.Errorf("openapi.json documents %s, which is not routed", r)
		}
	}
}

// TestOpenAPIStatusesMatchLifecycle keeps the document's status enums the
// lifecycle's statuses, so that a client generated from it accepts every
// status the daemon reports.
func TestOpenAPIStatusesMatchLifecycle(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Enum []string `json:"enum"`
				} `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var want []string
	for _, s := range sandbox.Statuses() {
		want = append(want, string(s))
	}
	for _, schema := range []string{"Sandbox", "LifecycleEvent"} {
		got := doc.Components.Schemas[schema].Properties["status"].Enum
		if !slices.Equal(got, want) {
			t.Errorf("openapi.json %s.status enum = %q, want the lifecycle's %q", schema, got, want)
		}
	}
}
