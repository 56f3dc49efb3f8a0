package agentapi

import (
	"slices"
	"strings"
	"testing"
)

// The table's own rules: internal routes live under InternalPrefix and
// public ones never do, patterns are unique, and the metadata goes only
// where the forward path expects it.
func TestRouteTableRules(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Routes {
		if seen[r.Pattern()] {
			t.Errorf("%s is declared twice", r.Pattern())
		}
		seen[r.Pattern()] = true
		if internal := strings.HasPrefix(r.Path, InternalPrefix); internal == r.Public {
			t.Errorf("%s: public %v, but under %s: %v", r.Pattern(), r.Public, InternalPrefix, internal)
		}
		if r.Bulk != (r.Path == "/files/raw" || r.Path == "/files/archive") {
			t.Errorf("%s: bulk %v: large buffers are for the routes that move file contents", r.Pattern(), r.Bulk)
		}
		if r.Method == "GET" && r.Path != PathDial && r.Path != "/terminal" && !r.Idempotent {
			t.Errorf("%s: a GET route that is not idempotent", r.Pattern())
		}
	}
	var metrics []string
	for _, r := range Routes {
		if r.Metric != "" {
			metrics = append(metrics, r.Path+"="+r.Metric)
		}
	}
	if want := []string{"/exec=buffered", "/exec/stream=stream"}; !slices.Equal(metrics, want) {
		t.Errorf("metric kinds %v, want %v (sandboxd_exec_total's kinds are a contract)", metrics, want)
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		method, path string
		want         string // matched pattern
		allow        string // else the Allow of a 405, or "" for a 404
	}{
		{"POST", "/exec", "POST /exec", ""},
		{"POST", "/exec/stream", "POST /exec/stream", ""},
		{"GET", "/exec", "", "POST"},
		{"GET", "/processes/web-1/logs/stream", "GET /processes/{pid}/logs/stream", ""},
		{"HEAD", "/files/raw", "GET /files/raw", ""},
		{"DELETE", "/files/raw", "", "GET, HEAD, PUT"},
		{"POST", "/sessions/s1/env", "POST /sessions/{sid}/env", ""},
		{"GET", "/sessions/", "", ""},
		{"GET", "/sessions//env", "", ""},
		{"POST", "/exec/", "", ""},
		{"POST", "/nope", "", ""},
		{"POST", "/exec/stream/more", "", ""},
		// Internal routes are never matched, known or not.
		{"GET", "/internal/health", "", ""},
		{"GET", "/internal/activity", "", ""},
		{"POST", "/internal/shutdown", "", ""},
		{"GET", "/internal/dial", "", ""},
		{"GET", "/internal/anything-added-later", "", ""},
	}
	for _, tt := range tests {
		r, allow, ok := Match(tt.method, tt.path)
		if ok != (tt.want != "") || (ok && r.Pattern() != tt.want) {
			t.Errorf("Match(%s %s) = %s, %v; want %q", tt.method, tt.path, r.Pattern(), ok, tt.want)
		}
		if got := strings.Join(allow, ", "); got != tt.allow {
			t.Errorf("Match(%s %s): allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
}
