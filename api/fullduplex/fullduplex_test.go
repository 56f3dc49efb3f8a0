package fullduplex_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

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

// A caller that stalls the rest of a body the handler left unread has its
// connection closed once EndBodyWithin's wait passed, and the rest is never
// read as a request; also through a wrapping ResponseWriter.
func TestEndBodyWithinClosesAStalledBody(t *testing.T) {
	for name, wrap := range map[string]func(http.ResponseWriter) http.ResponseWriter{
		"server's writer": func(w http.ResponseWriter) http.ResponseWriter { return w },
		"wrapped":         func(w http.ResponseWriter) http.ResponseWriter { return wrapper{w} },
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w = wrap(w)
				fullduplex.Enable(w)
				w.WriteHeader(http.StatusServiceUnavailable)
				io.WriteString(w, "not now")
				fullduplex.EndBodyWithin(w, r, 200*time.Millisecond)
			}))
			srv.Config.ErrorLog = fullduplextest.ErrorLog(t)
			srv.Start()
			defer srv.Close()
			fullduplextest.ClosesStalledBody(t, srv.Listener.Addr().String(), "POST / HTTP/1.1\r\nHost: x", 200*time.Millisecond)
		})
	}
}

type wrapper struct{ http.ResponseWriter }

func (w wrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }
