package httpapi

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func wsRequest(protocols ...string) *http.Request {
	r := httptest.NewRequest("GET", "/v1/sandboxes/x/terminal", nil)
	r.Header.Set("Connection", "keep-alive, Upgrade")
	r.Header.Set("Upgrade", "websocket")
	for _, p := range protocols {
		r.Header.Add("Sec-WebSocket-Protocol", p)
	}
	return r
}

func TestTokenSubprotocol(t *testing.T) {
	s := &Server{opts: Options{Token: "s3cret"}, log: slog.New(slog.DiscardHandler)}
	ok := s.authenticated(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	for _, tt := range []struct {
		name string
		r    *http.Request
		want int
	}{
		{"subprotocol token", wsRequest("sandboxd.terminal.v1, sandboxd.token.s3cret"), 204},
		{"token in its own header line", wsRequest("sandboxd.terminal.v1", "sandboxd.token.s3cret"), 204},
		{"wrong token", wsRequest("sandboxd.token.nope"), 401},
		{"no token", wsRequest("sandboxd.terminal.v1"), 401},
		{"not a websocket", func() *http.Request {
			r := httptest.NewRequest("GET", "/v1/health", nil)
			r.Header.Set("Sec-WebSocket-Protocol", "sandboxd.token.s3cret")
			return r
		}(), 401},
	} {
		rec := httptest.NewRecorder()
		ok(rec, tt.r)
		if rec.Code != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, rec.Code, tt.want)
		}
	}

	h := wsRequest("sandboxd.terminal.v1, sandboxd.token.s3cret", "other").Header
	stripTokenSubprotocol(h)
	if got := strings.Join(h.Values("Sec-WebSocket-Protocol"), "|"); got != "sandboxd.terminal.v1, other" {
		t.Errorf("after strip: %q", got)
	}
	h = wsRequest("sandboxd.token.s3cret").Header
	stripTokenSubprotocol(h)
	if _, present := h["Sec-Websocket-Protocol"]; present {
		t.Errorf("an empty protocol header was left: %v", h)
	}
}
