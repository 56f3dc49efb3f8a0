package requestid

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestMiddleware(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&buf, nil)))
	var seen string
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Get(Header)
		log.InfoContext(r.Context(), "handled")
	}))
	for _, tc := range []struct {
		name, in string
		keep     bool
	}{
		{"caller's ID", "job-42:step.1_a", true},
		{"none", "", false},
		{"forged log line", "x\nlevel=ERROR msg=forged", false},
		{"spaces", "a b", false},
		{"too long", strings.Repeat("a", MaxLen+1), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			req := httptest.NewRequest("GET", "/", nil)
			if tc.in != "" {
				req.Header[Header] = []string{tc.in}
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			got := rec.Header().Get(Header)
			if tc.keep && got != tc.in {
				t.Errorf("response ID %q, want the caller's %q", got, tc.in)
			}
			if !tc.keep && (got == tc.in || !Valid(got)) {
				t.Errorf("response ID %q for a caller's %q: want a fresh valid one", got, tc.in)
			}
			if seen != got {
				t.Errorf("the handler saw %q in the request header, the response says %q", seen, got)
			}
			if !strings.Contains(buf.String(), "request_id="+got) || strings.Count(buf.String(), "\n") != 1 {
				t.Errorf("log %q: want one line with request_id=%s", buf.String(), got)
			}
		})
	}
}
