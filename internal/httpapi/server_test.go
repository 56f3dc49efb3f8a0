package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/store"
)

// testServer is a Server without a manager: enough for routes that answer
// before reaching one.
func testServer() *Server {
	return New(Options{Token: "s3cret", Log: slog.New(slog.DiscardHandler)})
}

// TestNoRedirects: the mux redirects paths it would match after cleaning
// or with a trailing slash (307 for a POST), and clients follow
// redirects. The API answers 404 or 405 instead, as for a path no route
// has.
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
		// No route: no redirect either, and the same codes.
		{"POST", "/v1/sandboxes", api.CodeMethodNotAllowed},
		{"PUT", "/v1/keys", api.CodeMethodNotAllowed},
		{"GET", "/", api.CodeNotFound},
		{"GET", "/v1", api.CodeNotFound},
		{"GET", "/v1/", api.CodeNotFound},
		{"POST", "/no/such/route", api.CodeNotFound},
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

// TestBearerSchemeIsCaseInsensitive: "bearer" is the same scheme as
// "Bearer" (RFC 9110, 11.1), on API routes and for private previews.
func TestBearerSchemeIsCaseInsensitive(t *testing.T) {
	s := testServer()
	for _, tt := range []struct {
		header string
		want   int
	}{
		{"Bearer s3cret", 200},
		{"bearer s3cret", 200},
		{"BEARER  s3cret ", 200},
		{"Basic s3cret", 401},
		{"Bearers3cret", 401},
		{"bearer nope", 401},
		{"s3cret", 401},
	} {
		r := httptest.NewRequest("GET", "http://127.0.0.1/v1/health", nil)
		r.Header.Set("Authorization", tt.header)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		if rec.Code != tt.want {
			t.Errorf("Authorization %q: %d, want %d", tt.header, rec.Code, tt.want)
		}
		if got := s.hasAPIToken(r); got != (tt.want == 200) {
			t.Errorf("hasAPIToken with %q = %v", tt.header, got)
		}
	}
}

// TestPreviewDomainIsPreviewsOnly: every name below the preview domain
// belongs to previews. One that is not a valid preview host gets
// PREVIEW_NOT_FOUND, never the console or the API; other hosts keep them.
func TestPreviewDomainIsPreviewsOnly(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "registry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ports, err := proxy.NewRegistry(context.Background(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("console")) })
	s := New(Options{Token: "s3cret", Log: slog.New(slog.DiscardHandler), Ports: ports, Console: console,
		Preview: PreviewConfig{Domain: "localhost", Scheme: "http"}})
	for _, tt := range []struct {
		host, path string
		want       string // "console", "api" or a code
	}{
		{"127.0.0.1:7070", "/", "console"},
		{"localhost:7070", "/", "console"},
		{"sandboxd.example.com", "/", "console"},
		{"127.0.0.1:7070", "/v1/health", "api"},
		{"foo.localhost:7070", "/", string(api.CodePreviewNotFound)},
		{"foo.localhost:7070", "/v1/health", string(api.CodePreviewNotFound)},
		{"8080-demo.localhost", "/", string(api.CodePreviewNotFound)},
		{"8080-demo-BAD!.localhost", "/console/", string(api.CodePreviewNotFound)},
		{"a.b.localhost", "/v1/health", string(api.CodePreviewNotFound)},
		{"8080-demo-abcdefghijklmnop.localhost", "/", string(api.CodePreviewNotFound)},
	} {
		r := httptest.NewRequest("GET", "http://"+tt.host+tt.path, nil)
		r.Header.Set("Authorization", "Bearer s3cret")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, r)
		var got string
		var e api.Error
		switch {
		case rec.Body.String() == "console":
			got = "console"
		case json.Unmarshal(rec.Body.Bytes(), &e) == nil && e.Code != "":
			got = string(e.Code)
		case rec.Code == 200:
			got = "api"
		}
		if got != tt.want {
			t.Errorf("Host %s, %s: got %q (%d %s), want %q", tt.host, tt.path, got, rec.Code, rec.Body, tt.want)
		}
	}
}
