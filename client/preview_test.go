package client

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex/fullduplextest"
)

// A preview call whose body was left unread (the daemon could not be
// reached, or answered first) is answered on a connection of the caller's
// that stays usable, even when the body arrives after the answer began:
// with full duplex, the server read the body's end after it stopped
// watching the connection and the next request panicked it
// (golang/go#68560), which dropped the connection.
func TestPreviewHandlerUnreadBodyKeepsTheConnection(t *testing.T) {
	unreachable := httptest.NewServer(http.NotFoundHandler())
	unreachable.Close()
	first := httptest.NewServer(fullduplextest.AnswerFirst)
	defer first.Close()
	for name, daemon := range map[string]string{"unreachable": unreachable.URL, "answered first": first.URL} {
		t.Run(name, func(t *testing.T) {
			c, err := New(daemon)
			if err != nil {
				t.Fatal(err)
			}
			front := httptest.NewUnstartedServer(c.PreviewHandler("preview.test", nil))
			front.Config.ErrorLog = fullduplextest.ErrorLog(t)
			front.Start()
			defer front.Close()
			const host = "Host: 3000-box-tok.preview.test"
			answers := fullduplextest.KeepsConnection(t, front.Listener.Addr().String(),
				"POST /upload HTTP/1.1\r\n"+host, "a body nobody reads", "GET / HTTP/1.1\r\n"+host)
			if name == "unreachable" && answers[0].Status != api.CodeSandboxUnavailable.HTTPStatus() {
				t.Errorf("first call: %+v", answers[0])
			}
		})
	}
}
