package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h := Handler()
	for _, tt := range []struct {
		path, contains, contentType string
		status                      int
	}{
		{"/", `<script defer src="/console/console.js">`, "text/html", 200},
		{"/console/console.js", "", "text/javascript", 200},
		{"/console/console.css", ".xterm", "text/css", 200},
		{"/console/index.html", "<title>sandboxd</title>", "text/html", 200},
		{"/console/", "", "", 404},
		{"/console/../console.go", "", "", 404},
		{"/console/..%2fconsole.go", "", "", 404},
		{"/console/nope.js", "", "", 404},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://localhost"+tt.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tt.status || !strings.Contains(string(body), tt.contains) ||
			!strings.HasPrefix(rec.Header().Get("Content-Type"), tt.contentType) {
			t.Errorf("%s: %d %q %.80q", tt.path, rec.Code, rec.Header().Get("Content-Type"), body)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", tt.path, csp)
		}
		if rec.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", tt.path)
		}
	}
	// HEAD works; caching of the page is revalidated.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/", nil))
	if rec.Code != 200 || rec.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("HEAD /: %d %q", rec.Code, rec.Header().Get("Cache-Control"))
	}
}
