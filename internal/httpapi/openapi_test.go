package httpapi

import (
	"encoding/json"
	"strings"
	"testing"
)

// agentRoutes are served by each sandbox's agent through the forwarding
// route; they are documented like the daemon's own.
var agentRoutes = []string{
	"POST /v1/sandboxes/{id}/exec",
	"POST /v1/sandboxes/{id}/exec/stream",
}

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
	for _, r := range agentRoutes {
		routed[r] = true
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
