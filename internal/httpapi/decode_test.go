package httpapi

import (
	"bytes"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

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

// TestReadAllIsIOReadAll: readAll reads what io.ReadAll of the body
// limited to limit does, whatever the size it is told (a Content-Length
// the body may not keep to), a byte at a time or all at once.
func TestReadAllIsIOReadAll(t *testing.T) {
	const limit = 100
	for _, n := range []int{0, 1, 10, 60, 99, 100, 101, 300} {
		body := strings.Repeat("x", n)
		for _, size := range []int64{-1, 0, 1, int64(n) - 1, int64(n), int64(n) + 1, limit - 1, limit, 500} {
			for _, oneByte := range []bool{false, true} {
				reader := func() io.Reader {
					if oneByte {
						return iotest.OneByteReader(strings.NewReader(body))
					}
					return strings.NewReader(body)
				}
				want, _ := io.ReadAll(io.LimitReader(reader(), limit))
				got, err := readAll(reader(), limit, size)
				if err != nil || string(got) != string(want) {
					t.Errorf("body %d bytes, size %d, a byte at a time %v: read %d bytes, %v; want %d", n, size, oneByte, len(got), err, len(want))
				}
			}
		}
	}
}
