package fullduplex_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sandboxd/sandboxd/api/fullduplex"
	"github.com/sandboxd/sandboxd/api/fullduplex/fullduplextest"
)

// A full-duplex handler that answers without reading its body, then
// EndBody, leaves the caller's connection usable, even when the body
// arrives after the answer began. Without EndBody the server panics on the
// connection's next request (golang/go#68560), which the test's ErrorLog
// reports.
func TestEndBodyKeepsTheConnection(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fullduplex.Enable(w); err != nil {
			t.Errorf("Enable: %v", err)
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not now")
		fullduplex.EndBody(w, r)
	}))
	srv.Config.ErrorLog = fullduplextest.ErrorLog(t)
	srv.Start()
	defer srv.Close()
	answers := fullduplextest.KeepsConnection(t, srv.Listener.Addr().String(),
		"POST / HTTP/1.1\r\nHost: x", "a body nobody reads", "GET / HTTP/1.1\r\nHost: x")
	for i, a := range answers {
		if a.Status != http.StatusServiceUnavailable || a.Body != "not now" {
			t.Errorf("call %d: %+v", i+1, a)
		}
	}
}
