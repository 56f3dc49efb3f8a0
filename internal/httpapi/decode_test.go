package httpapi

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		name, body string
		allowEmpty bool
		code       api.Code
	}{
		{"ok", `{"image":"host"}`, false, ""},
		{"empty allowed", "  ", true, ""},
		{"empty refused", "", false, api.CodeInvalidJSON},
		{"syntax", `{"image":`, false, api.CodeInvalidJSON},
		{"garbage", `<xml/>`, false, api.CodeInvalidJSON},
		{"type", `{"image":5}`, false, api.CodeValidationFailed},
		{"unknown field", `{"imag":"x"}`, false, api.CodeValidationFailed},
		{"trailing data", `{} {}`, false, api.CodeInvalidJSON},
		{"too large", `{"image":"` + strings.Repeat("x", 2000) + `"}`, false, api.CodeRequestTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("PUT", "/", strings.NewReader(tt.body))
			var v api.SandboxOptions
			e := (&Server{}).decodeJSON(httptest.NewRecorder(), r, &v, 1024, tt.allowEmpty)
			if tt.code == "" && e != nil || tt.code != "" && (e == nil || e.Code != tt.code) {
				t.Errorf("decodeJSON(%.40q) = %v, want code %q", tt.body, e, tt.code)
			}
		})
	}
}

// FuzzDecodeJSON: whatever the body, decoding answers a client error or
// success — never a panic, never a server error code.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"image":"host","env":{"A":"1"}}`, `{"limits":{"pids":-1}}`, `[`, `{"network":{"allowCidrs":[1]}}`, "\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("PUT", "/", bytes.NewReader(body))
		var v api.SandboxOptions
		if e := (&Server{}).decodeJSON(httptest.NewRecorder(), r, &v, 4096, true); e != nil {
			if s := e.Code.HTTPStatus(); s < 400 || s >= 500 || e.Message == "" {
				t.Fatalf("decodeJSON(%q) = %v (status %d)", body, e, s)
			}
		}
	})
}

// TestListStatusFilterTakesEveryLifecycleStatus: the list's status filter
// takes the lifecycle's statuses, lost included, and nothing else.
func TestListStatusFilterTakesEveryLifecycleStatus(t *testing.T) {
	for _, s := range sandbox.Statuses() {
		if !validStatus(string(s)) {
			t.Errorf("status %q refused", s)
		}
	}
	if !validStatus("lost") || validStatus("paused-ish") {
		t.Error("lost refused, or an unknown status taken")
	}
}
