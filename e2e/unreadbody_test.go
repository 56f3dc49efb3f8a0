package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex/fullduplextest"
)

// A call whose body the daemon left unread while it answered (a preview
// of a port nothing listens on; a streamed call refused before it reached
// the agent) is answered on a connection that stays usable, even when the
// body arrives after the answer began. With full duplex, the HTTP/1 server
// read such a body's end after it stopped watching the connection, and the
// connection's next request panicked it (golang/go#68560), which dropped
// the caller's connection.
func TestPreviewAndCallBodiesLeftUnreadKeepTheConnection(t *testing.T) {
	d := daemon(t)
	addr := strings.TrimPrefix(d.URL, "http://")
	t.Run("preview of a port nothing listens on", func(t *testing.T) {
		p, err := d.Client.Sandbox("unread-body").ExposePort(ctxT(t, time.Minute), 8181)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(p.URL)
		if err != nil {
			t.Fatal(err)
		}
		host := "Host: " + u.Host
		answers := fullduplextest.KeepsConnection(t, addr, "POST /upload HTTP/1.1\r\n"+host,
			"a body nothing reads", "GET / HTTP/1.1\r\n"+host)
		for i, a := range answers[:2] {
			if a.Status != 502 || errorCode(a.Body) != api.CodeServiceNotResponding {
				t.Errorf("call %d: %d %s", i+1, a.Status, a.Body)
			}
		}
	})
	t.Run("streamed call refused by a quota", func(t *testing.T) {
		_, key := tenantClient(t, d, api.KeyCreateRequest{Name: "unreadbody", Quotas: api.Quotas{MaxMemory: 1 << 20}})
		auth := "Host: sandboxd\r\nAuthorization: Bearer " + key
		answers := fullduplextest.KeepsConnection(t, addr,
			"POST /v1/sandboxes/over-quota/exec HTTP/1.1\r\nContent-Type: text/plain\r\n"+auth, "a body nothing reads",
			"GET /v1/health HTTP/1.1\r\n"+auth)
		for i, a := range answers[:2] {
			if errorCode(a.Body) != api.CodeQuotaExceeded {
				t.Errorf("call %d: %d %s", i+1, a.Status, a.Body)
			}
		}
	})
	if strings.Contains(d.Logs(), "http: panic serving") {
		t.Error("the daemon's HTTP server panicked")
	}
}
