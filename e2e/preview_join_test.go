package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// rawConn is one client connection to the daemon, for requests whose
// connection matters (which ones share it).
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, d *testdaemon.Daemon) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(d.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, br: bufio.NewReader(c)}
}

// do sends a GET of target with Host host (and extra header lines) and
// reads the answer.
func (rc *rawConn) do(host, target string, extra ...string) (*http.Response, string, error) {
	rc.c.SetDeadline(time.Now().Add(time.Minute))
	req := "GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n"
	for _, h := range extra {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(rc.c, req+"\r\n"); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		return nil, "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), err
}

func (rc *rawConn) echo(host, target string, extra ...string) echoReply {
	rc.t.Helper()
	resp, body, err := rc.do(host, target, extra...)
	if err != nil {
		rc.t.Fatalf("GET %s on %s: %v", target, host, err)
	}
	var e echoReply
	if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &e) != nil {
		rc.t.Fatalf("GET %s on %s: %d %s", target, host, resp.StatusCode, body)
	}
	return e
}

func hostOf(u string) string {
	return strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/")
}

// With --preview-join, a public preview's connection is joined to the
// service's after its first request: later requests that need nothing of
// the daemon pass in the kernel, the others are checked and rewritten as
// on a new connection (docs/security.md).
func TestPreviewJoinedConnections(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	if clusterGateway != nil {
		t.Skip("a daemon of its own")
	}
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--preview-join"}})
	a, b := d.Client.Sandbox("join-a"), d.Client.Sandbox("join-b")
	testdaemon.StartTestServer(t, a, "0.0.0.0:8080")
	testdaemon.StartTestServer(t, b, "0.0.0.0:8080")
	ctx := ctxT(t, 3*time.Minute)
	pa, err := a.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.ExposePort(ctx, 8080, client.Private())
	if err != nil {
		t.Fatal(err)
	}
	hostA, hostB := hostOf(pa.URL), hostOf(pb.URL)
	// joined returns a connection whose first request was answered and
	// whose second passed in the kernel (no X-Forwarded-For added).
	joined := func(t *testing.T) *rawConn {
		rc := dialRaw(t, d)
		first := rc.echo(hostA, "/echo/1")
		if first.Hostname != "join-a" || http.Header(first.Header).Get("X-Forwarded-For") == "" {
			t.Fatalf("first request: %+v", first)
		}
		if e := rc.echo(hostA, "/echo/2"); http.Header(e.Header).Get("X-Forwarded-For") != "" {
			t.Fatalf("second request was not joined: %+v", e)
		}
		return rc
	}

	t.Run("a connection to a never reaches b", func(t *testing.T) {
		// b's Host, with or without b's credentials, or an absolute URL
		// naming b: the connection ends; neither a's service nor b's
		// answers on it.
		for _, tc := range []struct {
			target string
			extra  []string
		}{
			{"/echo/3", nil},
			{"/echo/3", []string{"Authorization: Bearer " + d.Token}},
		} {
			rc := joined(t)
			if resp, body, err := rc.do(hostB, tc.target, tc.extra...); err == nil {
				t.Errorf("b's Host on a's connection %v: %d %s", tc.extra, resp.StatusCode, body)
			}
		}
		rc := joined(t)
		if resp, body, err := rc.do(hostA, "http://"+hostB+"/echo/3"); err == nil {
			t.Errorf("b's URL on a's connection: %d %s", resp.StatusCode, body)
		}
		// A new connection reaches b as its checks say.
		if resp, _, err := dialRaw(t, d).do(hostB, "/echo/"); err != nil || resp.StatusCode != 401 {
			t.Errorf("b on a new connection: %v %v", resp, err)
		}
	})

	t.Run("later requests that need the daemon are checked and rewritten", func(t *testing.T) {
		rc := joined(t)
		e := rc.echo(hostA, "/echo/3", "Authorization: Bearer "+d.Token, "X-Forwarded-For: 203.0.113.9", "Cookie: a=1; sandboxd_preview=x")
		h := http.Header(e.Header)
		if e.Hostname != "join-a" || h.Get("Authorization") != "" || h.Get("X-Forwarded-For") != "127.0.0.1" ||
			h.Get("X-Forwarded-Host") != hostA || h.Get("Cookie") != "a=1" {
			t.Errorf("the API token, X-Forwarded-For and the preview cookie on a joined connection: %+v", e)
		}
		// The rest of the connection is the daemon's.
		if e := rc.echo(hostA, "/echo/4"); http.Header(e.Header).Get("X-Forwarded-For") != "127.0.0.1" {
			t.Errorf("after a diverted request: %+v", e)
		}
		// A header split across two writes does not slip past the scan.
		rc = joined(t)
		req := "GET /echo/5 HTTP/1.1\r\nHost: " + hostA + "\r\nAuthoriz"
		io.WriteString(rc.c, req)
		time.Sleep(50 * time.Millisecond)
		io.WriteString(rc.c, "ation: Bearer "+d.Token+"\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
		resp, err := http.ReadResponse(rc.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got echoReply
		json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if h := http.Header(got.Header); got.Path != "/echo/5" || h.Get("Authorization") != "" || h.Get("X-Forwarded-For") != "127.0.0.1" {
			t.Errorf("a split Authorization header: %+v", got)
		}
	})

	t.Run("a private preview is checked on every request", func(t *testing.T) {
		rc := dialRaw(t, d)
		if resp, body, err := rc.do(hostB, "/echo/"); err != nil || resp.StatusCode != 401 || errorCode(body) != api.CodeUnauthorized {
			t.Fatalf("no credentials on a new connection: %v %v %s", resp, err, body)
		}
		if e := rc.echo(hostB, "/echo/", "Authorization: Bearer "+d.Token); e.Hostname != "join-b" || strings.Contains(fmt.Sprint(e.Header), d.Token) {
			t.Errorf("with the API token: %+v", e)
		}
		if resp, _, err := rc.do(hostB, "/echo/"); err != nil || resp.StatusCode != 401 {
			t.Errorf("the same connection without the token: %v %v", resp, err)
		}
	})

	t.Run("requests that carry credentials or come through a proxy are not joined", func(t *testing.T) {
		rc := dialRaw(t, d)
		rc.echo(hostA, "/echo/", "Authorization: Bearer "+d.Token)
		if e := rc.echo(hostA, "/echo/", "Authorization: Bearer "+d.Token); http.Header(e.Header).Get("Authorization") != "" {
			t.Errorf("the API token reached the service: %+v", e)
		}
		// A proxy in front (a cluster's gateway) says so with
		// X-Forwarded-For: it may mix preview hosts on one connection.
		rc = dialRaw(t, d)
		rc.echo(hostA, "/echo/", "X-Forwarded-For: 203.0.113.9")
		// b is private: the daemon, not a's service, answers.
		if resp, body, err := rc.do(hostB, "/echo/", "X-Forwarded-For: 203.0.113.9"); err != nil || resp.StatusCode != 401 {
			t.Errorf("b's Host after a proxied request: %v %v %s", resp, err, body)
		}
	})

	t.Run("unexposing closes joined connections", func(t *testing.T) {
		rc := dialRaw(t, d)
		rc.echo(hostA, "/echo/")
		rc.echo(hostA, "/echo/")
		if err := a.UnexposePort(ctx, 8080); err != nil {
			t.Fatal(err)
		}
		if resp, body, err := rc.do(hostA, "/echo/"); err == nil {
			t.Errorf("the joined connection outlived its preview: %d %s", resp.StatusCode, body)
		}
		if resp, _, err := dialRaw(t, d).do(hostA, "/"); err != nil || resp.StatusCode != 404 {
			t.Errorf("a new connection after unexpose: %v %v", resp, err)
		}
	})
}
