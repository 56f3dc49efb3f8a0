package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/sandboxd/sandboxd/api"
)

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:7070", "ftp://host", "http://", "http://h/?q=1", "http://u:p@h/", "http://h/#f", "://x"} {
		if _, err := New(u); err == nil {
			t.Errorf("New(%q) succeeded, want an error", u)
		}
	}
}

func TestNewKeepsPathPrefix(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /prefix/v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Health{Status: "ok"})
	})
	srv := httptest.NewServer(requireToken(mux))
	defer srv.Close()
	c, err := New(srv.URL+"/prefix/", WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health(t.Context()); err != nil {
		t.Fatalf("Health through a path prefix: %v", err)
	}
}

func TestHeaders(t *testing.T) {
	tests := []struct {
		name   string
		opts   []Option
		wantUA string
	}{
		{"default user agent", nil, defaultUserAgent},
		{"custom user agent", []Option{WithUserAgent("my-app/1.0")}, "my-app/1.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got http.Header
			mux := http.NewServeMux()
			mux.HandleFunc("PUT /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
				got = r.Header.Clone()
				writeJSON(w, 201, sandboxJSON(r.PathValue("id"), true))
			})
			c := newTestClient(t, mux, tt.opts...)
			if _, err := c.Sandbox("demo").Ensure(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{
				"Authorization": "Bearer " + testToken,
				"User-Agent":    tt.wantUA,
				"Content-Type":  "application/json",
				"Accept":        "application/json",
			}
			for k, v := range want {
				if got.Get(k) != v {
					t.Errorf("header %s = %q, want %q", k, got.Get(k), v)
				}
			}
		})
	}
}

func TestWrongTokenIsUnauthorized(t *testing.T) {
	c := newTestClient(t, http.NotFoundHandler(), WithToken("wrong"))
	_, err := c.Health(t.Context())
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Health with a wrong token: %v, want ErrUnauthorized", err)
	}
}

func TestFromEnv(t *testing.T) {
	var gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth = r.Header.Get("Authorization")
		writeJSON(w, 200, api.Health{Status: "ok"})
	}))
	defer srv.Close()
	t.Setenv(EnvURL, srv.URL)
	t.Setenv(EnvToken, "from-env")
	c, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.URL() != srv.URL {
		t.Errorf("URL() = %q, want %q", c.URL(), srv.URL)
	}
	if _, err := c.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer from-env" {
		t.Errorf("Authorization = %q, want the token from %s", gotAuth, EnvToken)
	}

	t.Setenv(EnvURL, "")
	c, err = FromEnv(WithToken("x"))
	if err != nil {
		t.Fatal(err)
	}
	if c.URL() != DefaultURL {
		t.Errorf("URL() without %s = %q, want %q", EnvURL, c.URL(), DefaultURL)
	}
}

func TestHealthAndList(t *testing.T) {
	health := api.Health{Status: "ok", Version: "1.2.3", Runtime: "crun"}
	list := []api.Sandbox{sandboxJSON("a", false), sandboxJSON("b", false)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, health) })
	mux.HandleFunc("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.SandboxList{Sandboxes: list})
	})
	c := newTestClient(t, mux)
	h, err := c.Health(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&health, h); diff != "" {
		t.Errorf("Health (-want +got):\n%s", diff)
	}
	got, err := c.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(list, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
}

var allSentinels = []error{ErrNotFound, ErrInvalid, ErrUnauthorized, ErrConflict, ErrTimeout,
	ErrSessionTerminated, ErrResourceExhausted, ErrUnavailable}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		body        string
		contentType string
		wantCode    api.Code
		wantMessage string
		want        []error // the sentinels it must match; it must match no other
	}{
		{"sandbox not found", 404, `{"code":"SANDBOX_NOT_FOUND","message":"no sandbox x"}`, "", api.CodeSandboxNotFound, "no sandbox x", []error{ErrNotFound}},
		{"session not found", 404, `{"code":"SESSION_NOT_FOUND","message":"m"}`, "", api.CodeSessionNotFound, "m", []error{ErrNotFound}},
		{"route not found", 404, `{"code":"NOT_FOUND","message":"m"}`, "", api.CodeNotFound, "m", []error{ErrNotFound}},
		{"future not found code", 404, `{"code":"FILE_NOT_FOUND","message":"m"}`, "", "FILE_NOT_FOUND", "m", []error{ErrNotFound}},
		{"future not found code, other status", 400, `{"code":"PROCESS_NOT_FOUND","message":"m"}`, "", "PROCESS_NOT_FOUND", "m", []error{ErrNotFound, ErrInvalid}},
		{"invalid json", 400, `{"code":"INVALID_JSON","message":"m"}`, "", api.CodeInvalidJSON, "m", []error{ErrInvalid}},
		{"validation failed", 400, `{"code":"VALIDATION_FAILED","message":"m"}`, "", api.CodeValidationFailed, "m", []error{ErrInvalid}},
		{"invalid id", 400, `{"code":"INVALID_SANDBOX_ID","message":"m"}`, "", api.CodeInvalidSandboxID, "m", []error{ErrInvalid}},
		{"future invalid code", 422, `{"code":"INVALID_PORT","message":"m"}`, "", "INVALID_PORT", "m", []error{ErrInvalid}},
		{"too large", 413, `{"code":"REQUEST_TOO_LARGE","message":"m"}`, "", api.CodeRequestTooLarge, "m", []error{ErrInvalid}},
		{"unauthorized", 401, `{"code":"UNAUTHORIZED","message":"m"}`, "", api.CodeUnauthorized, "m", []error{ErrUnauthorized}},
		{"sandbox exists", 409, `{"code":"SANDBOX_EXISTS","message":"m"}`, "", api.CodeSandboxExists, "m", []error{ErrConflict}},
		{"session already exists", 409, `{"code":"SESSION_ALREADY_EXISTS","message":"m"}`, "", api.CodeSessionExists, "m", []error{ErrConflict}},
		{"options conflict", 409, `{"code":"OPTIONS_CONFLICT","message":"m"}`, "", "OPTIONS_CONFLICT", "m", []error{ErrConflict}},
		{"port already exposed", 409, `{"code":"PORT_ALREADY_EXPOSED","message":"m"}`, "", "PORT_ALREADY_EXPOSED", "m", []error{ErrConflict}},
		{"command timeout", 408, `{"code":"COMMAND_TIMEOUT","message":"m"}`, "", api.CodeCommandTimeout, "m", []error{ErrTimeout}},
		{"future timeout", 500, `{"code":"GIT_TIMEOUT","message":"m"}`, "", "GIT_TIMEOUT", "m", []error{ErrTimeout}},
		{"session terminated", 410, `{"code":"SESSION_TERMINATED","message":"m"}`, "", api.CodeSessionTerminated, "m", []error{ErrSessionTerminated}},
		{"resource exhausted", 429, `{"code":"RESOURCE_EXHAUSTED","message":"m"}`, "", api.CodeResourceExhausted, "m", []error{ErrResourceExhausted}},
		{"capacity exceeded", 503, `{"code":"CAPACITY_EXCEEDED","message":"m"}`, "", api.CodeCapacityExceeded, "m", []error{ErrResourceExhausted, ErrUnavailable}},
		{"preview busy", 503, `{"code":"PREVIEW_BUSY","message":"m"}`, "", api.CodePreviewBusy, "m", []error{ErrResourceExhausted, ErrUnavailable}},
		{"session busy", 429, `{"code":"SESSION_BUSY","message":"m"}`, "", api.CodeSessionBusy, "m", []error{ErrResourceExhausted}},
		{"sandbox unavailable", 503, `{"code":"SANDBOX_UNAVAILABLE","message":"m"}`, "", api.CodeSandboxUnavailable, "m", []error{ErrUnavailable}},
		{"internal", 500, `{"code":"INTERNAL_ERROR","message":"m"}`, "", api.CodeInternal, "m", nil},
		{"sandbox failed", 500, `{"code":"SANDBOX_FAILED","message":"m"}`, "", api.CodeSandboxFailed, "m", nil},
		{"method not allowed", 405, `{"code":"METHOD_NOT_ALLOWED","message":"m"}`, "", api.CodeMethodNotAllowed, "m", nil},
		{"proxy html 502", 502, "<html><body>Bad Gateway</body></html>\nmore", "text/html", "", "<html><body>Bad Gateway</body></html>", []error{ErrUnavailable}},
		{"plain 504", 504, "", "text/plain", "", "Gateway Timeout", []error{ErrUnavailable}},
		{"plain 404", 404, "404 page not found\n", "text/plain", "", "404 page not found", []error{ErrNotFound}},
		{"json without code", 500, `{"error":"boom"}`, "", "", `{"error":"boom"}`, nil},
		{"plain 401", 401, "nope", "text/plain", "", "nope", []error{ErrUnauthorized}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ct := tt.contentType
				if ct == "" {
					ct = "application/json"
				}
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			_, err := c.Sandbox("demo").Info(t.Context())
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Info: %v (%T), want an *Error", err, err)
			}
			if e.Status != tt.status || e.Code != tt.wantCode || e.Message != tt.wantMessage {
				t.Errorf("got Status=%d Code=%q Message=%q, want %d %q %q", e.Status, e.Code, e.Message, tt.status, tt.wantCode, tt.wantMessage)
			}
			for _, s := range allSentinels {
				want := false
				for _, w := range tt.want {
					want = want || w == s
				}
				if got := errors.Is(err, s); got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, got, want)
				}
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Status: 404, Code: api.CodeSandboxNotFound, Message: "no x"}, "SANDBOX_NOT_FOUND: no x"},
		{&Error{Status: 502, Message: "Bad Gateway"}, "HTTP 502: Bad Gateway"},
		{&Error{Message: "just words"}, "just words"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestErrorBodyReadIsBounded(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(500)
		chunk := []byte(strings.Repeat("x", 64<<10))
		for range 256 { // 16 MiB, far beyond the bound
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	_, err := c.Health(t.Context())
	var e *Error
	if !errors.As(err, &e) || e.Status != 500 {
		t.Fatalf("Health: %v, want an *Error with status 500", err)
	}
	if len(e.Message) > 300 {
		t.Errorf("message is %d bytes long; want it cut short", len(e.Message))
	}
}

func TestUnreachableDaemonIsUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := New(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Health(t.Context())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Health of a closed server: %v, want ErrUnavailable", err)
	}
}

func TestContextCancelledBeforeAnswer(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(t.Context())
	go cancel()
	_, err := c.List(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("List with a cancelled context: %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrUnavailable) {
		t.Errorf("a cancelled call must not look like an unavailable daemon: %v", err)
	}
}
