package client

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sandboxd/sandboxd/api"
)

// testToken is the bearer token the fake daemon accepts.
const testToken = "test-token"

// newTestClient starts an httptest.Server standing in for the daemon with
// handler behind bearer-token auth, and returns a Client for it. At the end
// of the test it checks that every response body the client received was
// closed.
func newTestClient(t *testing.T, handler http.Handler, opts ...Option) *Client {
	t.Helper()
	srv := httptest.NewServer(requireToken(handler))
	t.Cleanup(srv.Close)
	tr := &bodyTracker{rt: srv.Client().Transport}
	// Cleanups run last-in first-out: this check runs before srv.Close.
	t.Cleanup(func() {
		if n := tr.open.Load(); n != 0 {
			t.Errorf("%d response bodies were left open", n)
		}
	})
	all := append([]Option{WithToken(testToken), WithHTTPClient(&http.Client{Transport: tr})}, opts...)
	c, err := New(srv.URL, all...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// requireToken answers 401 UNAUTHORIZED, as the daemon does, unless the
// request carries the test token.
func requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "missing or wrong token", nil)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code api.Code, msg string, details map[string]any) {
	writeJSON(w, status, api.Error{Code: code, Message: msg, Details: details})
}

// decodeBody decodes a request body into v, failing the test on error.
func decodeBody[T any](t *testing.T, r *http.Request) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		t.Errorf("decoding %s %s body: %v", r.Method, r.URL.Path, err)
	}
	return v
}

// bodyTracker counts response bodies that have not been closed yet.
type bodyTracker struct {
	rt   http.RoundTripper
	open atomic.Int64
}

func (b *bodyTracker) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b.open.Add(1)
	resp.Body = &trackedBody{ReadCloser: resp.Body, tracker: b}
	return resp, nil
}

type trackedBody struct {
	io.ReadCloser
	once    sync.Once
	tracker *bodyTracker
}

func (tb *trackedBody) Close() error {
	tb.once.Do(func() { tb.tracker.open.Add(-1) })
	return tb.ReadCloser.Close()
}

// sandboxJSON is a plausible answer for sandbox id.
func sandboxJSON(id string, created bool) api.Sandbox {
	return api.Sandbox{ID: id, Status: api.StatusRunning, Image: "host", Runtime: "crun", Created: created}
}
