package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex"
	"github.com/sandboxd/sandboxd/api/fullduplex/fullduplextest"
)

// A call whose body the daemon left unread while it answered (a preview
// of a port nothing listens on; a streamed call refused before it reached
// the agent) is answered on a connection that stays usable, even when the
// body arrives after the answer began. With full duplex, the HTTP/1 server
// read such a body's end after it stopped watching the connection, and the
// connection's next request panicked it (golang/go#68560), which dropped
// the caller's connection.
//
// A caller that stalls the rest of such a body has its connection closed
// once fullduplex.DefaultEndBodyWait passed, and what it sends later is
// never read as a request.
func TestPreviewAndCallBodiesLeftUnreadKeepTheConnection(t *testing.T) {
	d := daemon(t)
	addr := strings.TrimPrefix(d.URL, "http://")
	p, err := d.Client.Sandbox("unread-body").ExposePort(ctxT(t, time.Minute), 8181)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	host := "Host: " + u.Host
	preview := "POST /upload HTTP/1.1\r\n" + host
	_, key := tenantClient(t, d, api.KeyCreateRequest{Name: "unreadbody", Quotas: api.Quotas{MaxMemory: 1 << 20}})
	auth := "Host: sandboxd\r\nAuthorization: Bearer " + key
	call := "POST /v1/sandboxes/over-quota/exec HTTP/1.1\r\nContent-Type: text/plain\r\n" + auth
	t.Run("preview of a port nothing listens on", func(t *testing.T) {
		answers := fullduplextest.KeepsConnection(t, addr, preview, "a body nothing reads", "GET / HTTP/1.1\r\n"+host)
		for i, a := range answers[:2] {
			if a.Status != 502 || errorCode(a.Body) != api.CodeServiceNotResponding {
				t.Errorf("call %d: %d %s", i+1, a.Status, a.Body)
			}
		}
	})
	t.Run("streamed call refused by a quota", func(t *testing.T) {
		answers := fullduplextest.KeepsConnection(t, addr, call, "a body nothing reads", "GET /v1/health HTTP/1.1\r\n"+auth)
		for i, a := range answers[:2] {
			if errorCode(a.Body) != api.CodeQuotaExceeded {
				t.Errorf("call %d: %d %s", i+1, a.Status, a.Body)
			}
		}
	})
	t.Run("stalled bodies", func(t *testing.T) {
		for name, head := range map[string]string{"preview": preview, "call": call} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				fullduplextest.ClosesStalledBody(t, addr, head, fullduplex.DefaultEndBodyWait)
			})
		}
	})
	if strings.Contains(d.Logs(), "http: panic serving") {
		t.Error("the daemon's HTTP server panicked")
	}
}

// A build's answer says Connection: close, and the daemon closes the
// connection after the whole answer, with no panic: a build refused before
// it reads its context (an invalid build arg) and one that reads the tar
// only to its end marker (GNU tar's record padding after it) leave the
// rest of the upload to the HTTP/1 server, whose read of it after a
// full-duplex handler panicked on the connection (golang/go#68560).
func TestImageBuildAnswersWholeThenClosesTheConnection(t *testing.T) {
	d := daemon(t)
	noDockerfile := layerOf(t, file{name: "README", body: "no Dockerfile here"})
	padded := append(bytes.Clone(noDockerfile), make([]byte, 10240-len(noDockerfile))...)
	for _, tt := range []struct {
		query string
		body  []byte
		split int // bytes sent before the answer
	}{
		{"name=refused&buildArg=1bad%3Dx", noDockerfile, 5},
		{"name=nodockerfile", padded, len(padded)},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(d.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprintf(conn, "POST /v1/images/build?%s HTTP/1.1\r\nHost: sandboxd\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n%s", tt.query, d.Token, len(tt.body), tt.body[:tt.split])
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.query, err)
		}
		answer, err := io.ReadAll(resp.Body)
		if err != nil || !resp.Close || !strings.Contains(string(answer), "event: error\n") {
			t.Errorf("%s: %s (Connection: close %v) %q, %v", tt.query, resp.Status, resp.Close, answer, err)
		}
		conn.Write(tt.body[tt.split:])
		if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
			t.Errorf("%s: after the answer %q, %v; want the connection closed", tt.query, rest, err)
		}
	}
	if strings.Contains(d.Logs(), "http: panic serving") {
		t.Error("the daemon's HTTP server panicked")
	}
}
