package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/api"
)

// testServer is a Server without a manager: enough for routes that answer
// before reaching one.
func testServer() *Server {
	return New(Options{Token: "s3cret", Log: slog.New(slog.DiscardHandler)})
}

// TestNoRedirects: the mux redirects paths it would match after cleaning
// or with a trailing slash (307 for a POST), and clients follow
// redirects. The API answers 404 or 405 instead.
func TestNoRedirects(t *testing.T) {
	s := testServer()
	for _, tt := range []struct {
		method, path string
		want         api.Code
	}{
		{"POST", "/v1/sandboxes/demo", api.CodeMethodNotAllowed},
		{"OPTIONS", "/v1/sandboxes/demo", api.CodeMethodNotAllowed},
		{"POST", "/v1/sandboxes/demo//exec", api.CodeNotFound},
		{"POST", "/v1/sandboxes//demo/exec", api.CodeNotFound},
		{"POST", "/v1/sandboxes/demo/./exec", api.CodeNotFound},
		{"GET", "/v1/sandboxes/demo/../other", api.CodeNotFound},
		{"GET", "/v1//sandboxes", api.CodeNotFound},
	} {
		r := httptest.NewRequest(tt.method, "http://127.0.0.1"+tt.path, strings.NewReader("{}"))
		r.Header.Set("Authorization", "Bearer s3cret")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		var e api.Error
		json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != tt.want.HTTPStatus() || e.Code != tt.want {
			t.Errorf("%s %s: %d %s (Location %q), want %d %s", tt.method, tt.path, rec.Code, e.Code,
				rec.Header().Get("Location"), tt.want.HTTPStatus(), tt.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/v1/sandboxes": true, "/v1/sandboxes/": true, "/a/b/c/": true,
		"": false, "a": false, "//": false, "/a//b": false, "/a/./b": false, "/a/../b": false, "/a/.": false, "/a/b//": false,
	} {
		if got := cleanPath(p); got != want {
			t.Errorf("cleanPath(%q) = %v, want %v", p, got, want)
		}
	}
}
