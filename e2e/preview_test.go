package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
	"github.com/sandboxd/sandboxd/internal/testdaemon/xorshift"
)

// previewClient is an HTTP client that sends every request to the daemon,
// whatever host the URL names, as a browser does for *.localhost. It does
// not follow redirects.
func previewClient(d *testdaemon.Daemon) *http.Client {
	addr := strings.TrimPrefix(d.URL, "http://")
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 256,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// wsDialer dials WebSockets the same way.
func wsOptions(d *testdaemon.Daemon, header http.Header) *websocket.DialOptions {
	return &websocket.DialOptions{HTTPClient: previewClient(d), HTTPHeader: header}
}

type echoReply struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	Query    string              `json:"query"`
	Host     string              `json:"host"`
	Header   map[string][]string `json:"header"`
	BodyLen  int64               `json:"bodyLen"`
	BodySHA  string              `json:"bodySha"`
	Hostname string              `json:"hostname"`
}

// get fetches u and returns the status and body.
func get(t *testing.T, c *http.Client, u string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t, time.Minute), "GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func errorCode(body string) api.Code {
	var e api.Error
	json.Unmarshal([]byte(body), &e)
	return e.Code
}

// previewSandbox starts a sandbox with testsrv on 0.0.0.0:8080 and on
// 127.0.0.1:9090, both exposed.
func previewSandbox(t *testing.T, d *testdaemon.Daemon, id string) (sb *client.Sandbox, wide, local *api.ExposedPort) {
	t.Helper()
	sb = d.Client.Sandbox(id)
	testdaemon.StartTestServer(t, sb, "0.0.0.0:8080")
	testdaemon.StartTestServer(t, sb, "127.0.0.1:9090")
	ctx := ctxT(t, time.Minute)
	wide, err := sb.ExposePort(ctx, 8080, client.WithPortName("web"))
	if err != nil {
		t.Fatal(err)
	}
	local, err = sb.ExposePort(ctx, 9090)
	if err != nil {
		t.Fatal(err)
	}
	return sb, wide, local
}

func TestPreviewURLs(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb, wide, local := previewSandbox(t, d, "pv")
		c := previewClient(d)
		ctx := ctxT(t, 5*time.Minute)

		t.Run("format and both bindings", func(t *testing.T) {
			port := strings.TrimPrefix(d.URL, "http://127.0.0.1:")
			want := fmt.Sprintf("http://8080-pv-%s.localhost:%s/", wide.Token, port)
			if wide.URL != want || wide.Name != "web" || !wide.Public || len(wide.Token) != 16 {
				t.Errorf("exposed port = %+v, want URL %s", wide, want)
			}
			for _, p := range []*api.ExposedPort{wide, local} {
				status, body, _ := get(t, c, p.URL, nil)
				if status != 200 || !strings.Contains(body, "hello from pv") {
					t.Errorf("%s: %d %q", p.URL, status, body)
				}
			}
			list, err := sb.ExposedPorts(ctx)
			if err != nil || len(list) != 2 || list[0].Port != 8080 || list[1].Port != 9090 {
				t.Errorf("ExposedPorts = %+v, %v", list, err)
			}
			// A preview host never reaches the API, whatever the path and
			// even with the token: the sandbox's service answers.
			status, body, _ := get(t, c, wide.URL+"v1/sandboxes", http.Header{"Authorization": {"Bearer " + d.Token}})
			if status != 200 || !strings.Contains(body, "GET /v1/sandboxes") || strings.Contains(body, `"sandboxes"`) {
				t.Errorf("API path on a preview host: %d %s", status, body)
			}
		})

		t.Run("expose is idempotent with the same options", func(t *testing.T) {
			again, err := sb.ExposePort(ctx, 8080, client.WithPortName("web"))
			if err != nil || again.Token != wide.Token {
				t.Errorf("again: %+v %v", again, err)
			}
			_, err = sb.ExposePort(ctx, 8080, client.WithPortName("other"))
			if !errors.Is(err, client.ErrConflict) || !strings.Contains(err.Error(), "PORT_ALREADY_EXPOSED") {
				t.Errorf("other options: %v", err)
			}
			for _, port := range []int{80, 1023, 65536} {
				if _, err := sb.ExposePort(ctx, port); !errors.Is(err, client.ErrInvalid) {
					t.Errorf("port %d: %v", port, err)
				}
			}
			// The daemon checks too, whatever the SDK does.
			status, body, _ := apiCall(t, d, "POST", "/v1/sandboxes/pv/ports", `{"port": 22}`)
			if status != 400 || errorCode(body) != api.CodeInvalidPort {
				t.Errorf("port 22 through the API: %d %s", status, body)
			}
			status, body, _ = apiCall(t, d, "POST", "/v1/sandboxes/pv/ports", `{"port": 8081, "token": "Bad-Token"}`)
			if status != 400 || errorCode(body) != api.CodeValidationFailed {
				t.Errorf("bad token through the API: %d %s", status, body)
			}
			// A chosen token is the URL's only secret: too short to guess is
			// refused (issue 11, item 13).
			for _, tok := range []string{"a", "abc", "eleven_char"} {
				status, body, _ = apiCall(t, d, "POST", "/v1/sandboxes/pv/ports", `{"port": 8081, "token": "`+tok+`"}`)
				if status != 400 || errorCode(body) != api.CodeValidationFailed {
					t.Errorf("token %q: %d %s", tok, status, body)
				}
			}
		})

		t.Run("methods and headers", func(t *testing.T) {
			for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"} {
				req, _ := http.NewRequestWithContext(ctx, m, wide.URL+"echo/a%20b?q=1&r=%2F", strings.NewReader("payload"))
				req.Header.Set("X-Forwarded-For", "203.0.113.66")
				req.Header.Set("X-Custom", "yes")
				req.Header.Set("Authorization", "Bearer "+d.Token) // the API token: never forwarded
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var e echoReply
				json.NewDecoder(resp.Body).Decode(&e)
				resp.Body.Close()
				host := strings.TrimSuffix(strings.TrimPrefix(wide.URL, "http://"), "/")
				h := http.Header(e.Header)
				switch {
				case resp.StatusCode != 200 || e.Method != m:
					t.Errorf("%s: %d, service saw %q", m, resp.StatusCode, e.Method)
				case e.Path != "/echo/a b" || e.Query != "q=1&r=%2F" || e.BodyLen != 7:
					t.Errorf("%s: path %q query %q body %d", m, e.Path, e.Query, e.BodyLen)
				case e.Host != host || h.Get("X-Forwarded-Host") != host || h.Get("X-Forwarded-Proto") != "http":
					t.Errorf("%s: host %q, X-Forwarded-Host %q, proto %q", m, e.Host, h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"))
				case h.Get("X-Forwarded-For") != "127.0.0.1":
					t.Errorf("%s: X-Forwarded-For %q: a client's own value must not pass", m, h.Get("X-Forwarded-For"))
				case h.Get("Authorization") != "" || h.Get("X-Custom") != "yes":
					t.Errorf("%s: Authorization %q (must be gone), X-Custom %q", m, h.Get("Authorization"), h.Get("X-Custom"))
				}
			}
			// An app's own Authorization header passes.
			status, body, _ := get(t, c, wide.URL+"echo/", http.Header{"Authorization": {"Bearer app-secret"}})
			if status != 200 || !strings.Contains(body, "app-secret") {
				t.Errorf("app Authorization: %d %s", status, body)
			}
		})

		t.Run("large bodies both ways", func(t *testing.T) {
			const size = 96 << 20
			src := io.LimitReader(pattern{}, size)
			sent := sha256.New()
			req, _ := http.NewRequestWithContext(ctx, "POST", wide.URL+"stream", io.TeeReader(src, sent))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got := sha256.New()
			n, err := io.Copy(got, resp.Body)
			resp.Body.Close()
			if err != nil || n != size || hex.EncodeToString(got.Sum(nil)) != hex.EncodeToString(sent.Sum(nil)) {
				t.Errorf("streamed echo: %d bytes of %d, %v", n, size, err)
			}
			resp, err = c.Get(wide.URL + fmt.Sprintf("big?n=%d", size))
			if err != nil {
				t.Fatal(err)
			}
			// Checked byte for byte, not by length: a segment repeated or
			// lost on the way fails it.
			got.Reset()
			n, err = io.Copy(got, resp.Body)
			resp.Body.Close()
			want := sha256.New()
			io.CopyN(want, xorshift.New(), size)
			if err != nil || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
				t.Errorf("download: %d bytes of %d, %v, sha256 %x, want %x", n, size, err, got.Sum(nil), want.Sum(nil))
			}
		})

		t.Run("event stream is not buffered", func(t *testing.T) {
			// The service sends an event every 3 s. Held back, the first
			// would come with the second (or the last): what is checked
			// is the gap between them, which a loaded host does not close.
			resp, err := c.Get(wide.URL + "sse?n=3&delay=3s")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			r := bufio.NewReader(resp.Body)
			line, err := r.ReadString('\n')
			if err != nil || line != "id: 0\n" {
				t.Fatalf("first line %q %v", line, err)
			}
			r.ReadString('\n')
			r.ReadString('\n')
			first := time.Now()
			line, err = r.ReadString('\n')
			if err != nil || line != "id: 1\n" {
				t.Fatalf("second event's first line %q %v", line, err)
			}
			if gap := time.Since(first); gap < time.Second {
				t.Errorf("the first event came only %s before the second, sent 3 s later: the proxy held it back", gap)
			}
			rest, _ := io.ReadAll(r)
			if !strings.Contains(string(rest), "data: event 2") {
				t.Errorf("rest of stream: %q", rest)
			}
		})

		t.Run("redirects are passed back", func(t *testing.T) {
			status, _, h := get(t, c, wide.URL+"redirect", nil)
			if status != 302 || h.Get("Location") != "/target?from=redirect" {
				t.Errorf("got %d Location %q", status, h.Get("Location"))
			}
		})

		t.Run("websocket", func(t *testing.T) {
			wsURL := "ws" + strings.TrimPrefix(wide.URL, "http") + "ws"
			conn, _, err := websocket.Dial(ctx, wsURL, wsOptions(d, nil))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			wsEcho(t, ctx, conn)
		})

		t.Run("wsConnect", func(t *testing.T) {
			// The raw route, with the API token.
			u := "ws" + strings.TrimPrefix(d.URL, "http") + "/v1/sandboxes/pv/ports/9090/ws/ws"
			if _, _, err := websocket.Dial(ctx, u, nil); err == nil {
				t.Error("wsConnect without the token worked")
			}
			conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + d.Token}}})
			if err != nil {
				t.Fatal(err)
			}
			wsEcho(t, ctx, conn)
			conn.Close(websocket.StatusNormalClosure, "")

			// The SDK's WSConnect, from a user's own server.
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				sb.WSConnect(w, r, 8080)
			}))
			defer front.Close()
			conn, _, err = websocket.Dial(ctx, "ws"+strings.TrimPrefix(front.URL, "http")+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			wsEcho(t, ctx, conn)
			conn.Close(websocket.StatusNormalClosure, "")

			// A plain request is not a WebSocket.
			status, body, _ := apiCall(t, d, "GET", "/v1/sandboxes/pv/ports/9090/ws/ws", "")
			if status != 400 || errorCode(body) != api.CodeValidationFailed {
				t.Errorf("wsConnect without an upgrade: %d %s", status, body)
			}
		})

		t.Run("PreviewHandler", func(t *testing.T) {
			front := httptest.NewServer(d.Client.PreviewHandler("preview.example.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("my own route"))
			})))
			defer front.Close()
			fc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			do := func(host, path string) (int, string) {
				req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+path, nil)
				req.Host = host
				resp, err := fc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			host := api.PreviewHost(8080, "pv", wide.Token, "preview.example.test")
			if status, body := do(host, "/echo/x"); status != 200 || !strings.Contains(body, `"X-Forwarded-Host":["`+host+`"]`) {
				t.Errorf("preview through the handler: %d %s", status, body)
			}
			if status, body := do(api.PreviewHost(8080, "pv", "wrongtoken", "preview.example.test"), "/"); status != 404 || errorCode(body) != api.CodePreviewNotFound {
				t.Errorf("wrong token through the handler: %d %s", status, body)
			}
			if status, body := do("app.example.test", "/"); status != 200 || body != "my own route" {
				t.Errorf("other host: %d %s", status, body)
			}
			if status, _ := do(host, "/redirect"); status != 302 {
				t.Errorf("redirect through the handler: %d", status)
			}
		})

		t.Run("not found says nothing more", func(t *testing.T) {
			port := strings.TrimPrefix(d.URL, "http://127.0.0.1:")
			var bodies []string
			for _, host := range []string{
				api.PreviewHost(8080, "nosuchsandbox", wide.Token, "localhost"),
				api.PreviewHost(8081, "pv", wide.Token, "localhost"),
				api.PreviewHost(8080, "pv", "wrongtoken", "localhost"),
				api.PreviewHost(8080, "pv", local.Token, "localhost"),
				// Names below the preview domain that are no preview host
				// get the same answer, not the console or the API.
				"8080-pv.localhost", "console.localhost", "8080-pv-" + strings.ToUpper(wide.Token) + "x.localhost",
			} {
				status, body, _ := get(t, c, "http://"+host+":"+port+"/", nil)
				if status != 404 || errorCode(body) != api.CodePreviewNotFound {
					t.Errorf("%s: %d %s", host, status, body)
				}
				bodies = append(bodies, body)
			}
			for _, b := range bodies[1:] {
				if b != bodies[0] {
					t.Errorf("404 bodies differ, telling which part was wrong: %q vs %q", b, bodies[0])
				}
			}
			// A preview request never creates a sandbox.
			if _, err := d.Client.Sandbox("nosuchsandbox").Info(ctx); !errors.Is(err, client.ErrNotFound) {
				t.Errorf("a preview request created a sandbox: %v", err)
			}
		})

		t.Run("nothing listening is 502", func(t *testing.T) {
			p, err := sb.ExposePort(ctx, 8081)
			if err != nil {
				t.Fatal(err)
			}
			status, body, _ := get(t, c, p.URL, nil)
			if status != 502 || errorCode(body) != api.CodeServiceNotResponding {
				t.Errorf("got %d %s", status, body)
			}
		})

		t.Run("token rotation", func(t *testing.T) {
			p, err := sb.ExposePort(ctx, 9090)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ { // idempotent
				if err := sb.UnexposePort(ctx, 9090); err != nil {
					t.Fatal(err)
				}
			}
			if status, _, _ := get(t, c, p.URL, nil); status != 404 {
				t.Errorf("unexposed port answers %d", status)
			}
			p2, err := sb.ExposePort(ctx, 9090)
			if err != nil {
				t.Fatal(err)
			}
			if p2.Token == p.Token {
				t.Error("exposing again reused the token")
			}
			if status, _, _ := get(t, c, p.URL, nil); status != 404 {
				t.Errorf("old URL answers %d after rotation", status)
			}
			if status, _, _ := get(t, c, p2.URL, nil); status != 200 {
				t.Errorf("new URL answers %d", status)
			}
		})

		t.Run("many concurrent connections", func(t *testing.T) {
			// On gVisor every connection goes through the agent, and some
			// of a burst are refused (docs/security.md#gvisor): each must
			// then be a clear 503 with a stable code, never a wrong or
			// missing answer, and the rest are served.
			gv := onGVisor(t)
			var wg sync.WaitGroup
			var served, refused atomic.Int64
			errs := make(chan error, 300)
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := c.Get(wide.URL + fmt.Sprintf("echo/%d", i))
					if err != nil {
						errs <- err
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if gv && resp.StatusCode == http.StatusServiceUnavailable && errorCode(string(body)) != "" {
						refused.Add(1)
						return
					}
					var e echoReply
					json.Unmarshal(body, &e)
					if resp.StatusCode != 200 || e.Path != fmt.Sprintf("/echo/%d", i) {
						errs <- fmt.Errorf("request %d: %d %q %.200s", i, resp.StatusCode, e.Path, body)
						return
					}
					served.Add(1)
				}()
			}
			for i := 0; i < 50; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(wide.URL, "http")+"ws", wsOptions(d, nil))
					if err != nil && gv && resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
						refused.Add(1)
						return
					}
					if err != nil {
						errs <- err
						return
					}
					defer conn.CloseNow()
					msg := fmt.Sprintf("socket %d", i)
					conn.Write(ctx, websocket.MessageText, []byte(msg))
					if _, got, err := conn.Read(ctx); err != nil || string(got) != msg {
						errs <- fmt.Errorf("socket %d: %q %v", i, got, err)
						return
					}
					served.Add(1)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("served %d, refused with 503 %d of 250 connections", served.Load(), refused.Load())
			if served.Load() == 0 {
				t.Error("no connection of the burst was served")
			}
		})
	})
}

func wsEcho(t *testing.T, ctx context.Context, conn *websocket.Conn) {
	t.Helper()
	conn.SetReadLimit(4 << 20)
	big := strings.Repeat("x", 1<<20)
	for _, msg := range []string{"hello", big} {
		if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.Read(ctx)
		if err != nil || string(got) != msg {
			t.Fatalf("echo of %d bytes: got %d bytes, %v", len(msg), len(got), err)
		}
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte{0, 1, 2, 255}); err != nil {
		t.Fatal(err)
	}
	if typ, got, err := conn.Read(ctx); err != nil || typ != websocket.MessageBinary || string(got) != "\x00\x01\x02\xff" {
		t.Fatalf("binary echo: %v %q %v", typ, got, err)
	}
}

type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(i ^ i>>7)
	}
	return len(p), nil
}

// apiCall sends an authenticated API request.
func apiCall(t *testing.T, d *testdaemon.Daemon, method, path, body string) (int, string, http.Header) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctxT(t, time.Minute), method, d.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestPreviewPrivatePorts(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("priv")
	testdaemon.StartTestServer(t, sb, "0.0.0.0:8080")
	ctx := ctxT(t, 3*time.Minute)
	p, err := sb.ExposePort(ctx, 8080, client.Private())
	if err != nil {
		t.Fatal(err)
	}
	if p.Public {
		t.Fatal("private port listed as public")
	}
	c := previewClient(d)

	// Without credentials: refused.
	if status, body, _ := get(t, c, p.URL, nil); status != 401 || errorCode(body) != api.CodeUnauthorized {
		t.Errorf("no credentials: %d %s", status, body)
	}
	// A wrong token or a forged cookie does not help.
	if status, _, _ := get(t, c, p.URL, http.Header{"Authorization": {"Bearer " + strings.Repeat("0", 64)}}); status != 401 {
		t.Errorf("wrong API token: %d", status)
	}
	if status, _, _ := get(t, c, p.URL, http.Header{"Cookie": {"sandboxd_preview=v1.9999999999.AAAA"}}); status != 401 {
		t.Errorf("forged cookie: %d", status)
	}
	// With the API token: served, and the token does not reach the service.
	status, body, _ := get(t, c, p.URL+"echo/", http.Header{"Authorization": {"Bearer " + d.Token}})
	if status != 200 || strings.Contains(body, d.Token) {
		t.Errorf("API token: %d %s", status, body)
	}

	// A signed link: sets a cookie for this host only and drops itself.
	link, err := sb.PreviewLink(ctx, 8080, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(link.URL, p.URL+"?sandboxd_link=") || time.Until(link.ExpiresAt) < 59*time.Minute {
		t.Errorf("link %+v", link)
	}
	jar, _ := cookiejar.New(nil)
	browser := previewClient(d)
	browser.Jar = jar
	resp, err := browser.Get(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookie := resp.Header.Get("Set-Cookie")
	if resp.StatusCode != 303 || resp.Header.Get("Location") != "/" || !strings.Contains(cookie, "HttpOnly") ||
		strings.Contains(strings.ToLower(cookie), "domain=") {
		t.Errorf("link answer: %d Location %q Set-Cookie %q", resp.StatusCode, resp.Header.Get("Location"), cookie)
	}
	status, body, _ = get(t, browser, p.URL+"echo/", nil)
	if status != 200 || strings.Contains(body, "sandboxd_preview") || strings.Contains(body, "sandboxd_link") {
		t.Errorf("with the link's cookie: %d %s", status, body)
	}
	// The cookie is scoped to the preview host: another port's host does
	// not get it from the jar, and does not accept it either.
	other, err := sb.ExposePort(ctx, 8090, client.Private())
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(p.URL)
	var cred string
	for _, ck := range jar.Cookies(u) {
		cred = ck.Value
	}
	if status, _, _ := get(t, c, other.URL, http.Header{"Cookie": {"sandboxd_preview=" + cred}}); status != 401 {
		t.Errorf("another port accepted the cookie: %d", status)
	}
	if status, _, _ := get(t, c, other.URL+"?sandboxd_link="+url.QueryEscape(cred), nil); status != 401 {
		t.Errorf("another port accepted the link: %d", status)
	}

	// An expired link is refused.
	short, err := sb.PreviewLink(ctx, 8080, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if status, _, _ := get(t, c, short.URL, nil); status != 401 {
		t.Errorf("expired link: %d", status)
	}

	// Rotation voids links and cookies.
	if err := sb.UnexposePort(ctx, 8080); err != nil {
		t.Fatal(err)
	}
	p2, err := sb.ExposePort(ctx, 8080, client.Private(), client.WithPreviewToken(p.Token))
	if err != nil {
		t.Fatal(err)
	}
	if p2.URL != p.URL {
		t.Fatalf("same token, different URL: %s %s", p2.URL, p.URL)
	}
	// Same token, so the old cookie still opens it: a chosen token is the
	// caller's to rotate. A fresh random token voids it.
	if err := sb.UnexposePort(ctx, 8080); err != nil {
		t.Fatal(err)
	}
	p3, err := sb.ExposePort(ctx, 8080, client.Private())
	if err != nil {
		t.Fatal(err)
	}
	u3, _ := url.Parse(p3.URL)
	if status, _, _ := get(t, c, p3.URL, http.Header{"Cookie": {"sandboxd_preview=" + cred}}); status != 401 {
		t.Errorf("old cookie opened the re-exposed port: %d", status)
	}
	_ = u3
	// Links to ports that are not exposed are refused.
	if _, err := sb.PreviewLink(ctx, 8095, 0); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("link to an unexposed port: %v", err)
	}
}

// One sandbox's preview URL reaches only that sandbox: not another
// sandbox's service on the same port, and not the host's.
func TestPreviewIsolation(t *testing.T) {
	d := daemon(t)
	a := d.Client.Sandbox("iso-a")
	b := d.Client.Sandbox("iso-b")
	testdaemon.StartTestServer(t, a, "0.0.0.0:8080")
	testdaemon.StartTestServer(t, b, "0.0.0.0:8080")
	ctx := ctxT(t, 2*time.Minute)
	pa, err := a.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	c := previewClient(d)
	port := strings.TrimPrefix(d.URL, "http://127.0.0.1:")
	if status, body, _ := get(t, c, pa.URL+"echo/", nil); status != 200 || !strings.Contains(body, `"hostname":"iso-a"`) {
		t.Errorf("a's URL: %d %s", status, body)
	}
	// a's token with b's ID: b has nothing exposed.
	if status, _, _ := get(t, c, "http://"+api.PreviewHost(8080, "iso-b", pa.Token, "localhost")+":"+port+"/", nil); status != 404 {
		t.Errorf("a's token on b: %d", status)
	}
	// Even once b exposes the port, a's token does not open it.
	pb, err := b.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := get(t, c, "http://"+api.PreviewHost(8080, "iso-b", pa.Token, "localhost")+":"+port+"/", nil); status != 404 {
		t.Errorf("a's token on b after b exposed: %d", status)
	}
	if status, body, _ := get(t, c, pb.URL+"echo/", nil); status != 200 || !strings.Contains(body, `"hostname":"iso-b"`) {
		t.Errorf("b's URL: %d %s", status, body)
	}

	// A service on the host's loopback is not reachable through a port the
	// sandbox exposes without listening on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("HOST SECRET")) }))
	hostPort := ln.Addr().(*net.TCPAddr).Port
	if hostPort < api.MinExposedPort {
		t.Skip("the host picked a port below 1024")
	}
	ph, err := a.ExposePort(ctx, hostPort)
	if err != nil {
		t.Fatal(err)
	}
	status, body, _ := get(t, c, ph.URL, nil)
	if status != 502 || strings.Contains(body, "HOST SECRET") {
		t.Errorf("host service through a preview: %d %s", status, body)
	}

	// A destroyed and re-created sandbox does not inherit its ports.
	if err := a.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	testdaemon.StartTestServer(t, a, "0.0.0.0:8080")
	if status, _, _ := get(t, c, pa.URL, nil); status != 404 {
		t.Errorf("old URL of a destroyed sandbox answers %d on its successor", status)
	}
	if list, err := a.ExposedPorts(ctx); err != nil || len(list) != 0 {
		t.Errorf("successor lists %+v %v", list, err)
	}
}

func TestPreviewSurvivesDaemonRestart(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("pv-restart")
	testdaemon.StartTestServer(t, sb, "0.0.0.0:8080")
	ctx := ctxT(t, 2*time.Minute)
	p, err := sb.ExposePort(ctx, 8080, client.WithPortName("kept"), client.Private())
	if err != nil {
		t.Fatal(err)
	}
	link, err := sb.PreviewLink(ctx, 8080, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d.Restart(t)
	list, err := d.Client.Sandbox("pv-restart").ExposedPorts(ctx)
	if err != nil || len(list) != 1 || list[0].Token != p.Token || list[0].Name != "kept" || list[0].Public {
		t.Fatalf("after restart: %+v %v", list, err)
	}
	c := previewClient(d)
	jar, _ := cookiejar.New(nil)
	c.Jar = jar
	// The link minted before the restart still works (the signing key is
	// kept), and the sandbox's server is still running (reattached).
	resp, err := c.Get(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if status, body, _ := get(t, c, list[0].URL, nil); status != 200 || !strings.Contains(body, "hello from pv-restart") {
		t.Errorf("after restart: %d %s", status, body)
	}
}

// A preview request to a sandbox whose container is gone starts it again.
func TestPreviewWakesTheSandbox(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("pv-wake")
	testdaemon.StartTestServer(t, sb, "0.0.0.0:8080")
	ctx := ctxT(t, 2*time.Minute)
	p, err := sb.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	c := previewClient(d)
	if status, _, _ := get(t, c, p.URL, nil); status != 200 {
		t.Fatalf("before: %d", status)
	}
	// Kill the sandbox's init (its agent): the container is gone, and its
	// service with it. The agent is found by its cgroup, named after the
	// sandbox's key, which names its network namespace too.
	keys, _ := os.ReadDir(filepath.Join(d.RunDir, "netns"))
	if len(keys) != 1 {
		t.Fatalf("want one sandbox namespace, have %v", keys)
	}
	killed := 0
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, proc := range procs {
		cg, err := os.ReadFile(proc + "/cgroup")
		mine := "/" + d.CgroupParent + "/" + keys[0].Name()
		if err != nil || !(strings.Contains(string(cg), mine+"/") || strings.Contains(string(cg), mine+"\n")) {
			continue
		}
		if cmd, _ := os.ReadFile(proc + "/cmdline"); strings.HasPrefix(string(cmd), "/.sandboxd/agent\x00") {
			pid, _ := strconv.Atoi(filepath.Base(proc))
			syscall.Kill(pid, syscall.SIGKILL)
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("killed %d agents, want 1", killed)
	}
	time.Sleep(200 * time.Millisecond)
	// The request starts the sandbox again; the service did not survive,
	// so nothing answers on the port, but the sandbox runs.
	status, body, _ := get(t, c, p.URL, nil)
	if status != 502 || errorCode(body) != api.CodeServiceNotResponding {
		t.Errorf("after the container died: %d %s", status, body)
	}
	info, err := sb.Info(ctx)
	if err != nil || info.Status != api.StatusRunning {
		t.Errorf("sandbox after the preview request: %+v %v", info, err)
	}
	if n := strings.Count(d.Logs(), `msg="sandbox started"`); n != 2 {
		t.Errorf("the sandbox started %d times, want 2 (created, then by the preview request)", n)
	}
}

// With --preview-listen, previews have a listener of their own that serves
// nothing else, and URLs name its port and the configured domain.
func TestPreviewListenerAndDomain(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	previewAddr := ln.Addr().String()
	ln.Close()
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--preview-listen", previewAddr, "--preview-domain", "Preview.Example.Test."}})
	sb := d.Client.Sandbox("pv-listen")
	testdaemon.StartTestServer(t, sb, "127.0.0.1:8080")
	ctx := ctxT(t, time.Minute)
	p, err := sb.ExposePort(ctx, 8080)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(previewAddr)
	if want := fmt.Sprintf("http://8080-pv-listen-%s.preview.example.test:%s/", p.Token, port); p.URL != want {
		t.Errorf("URL %s, want %s", p.URL, want)
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, network, previewAddr)
	}}}
	if status, body, _ := get(t, c, p.URL, nil); status != 200 || !strings.Contains(body, "hello from pv-listen") {
		t.Errorf("through the preview listener: %d %s", status, body)
	}
	// The preview listener serves no API, even with the token.
	status, body, _ := get(t, c, "http://"+previewAddr+"/v1/sandboxes", http.Header{"Authorization": {"Bearer " + d.Token}})
	if status != 404 || errorCode(body) != api.CodePreviewNotFound {
		t.Errorf("API on the preview listener: %d %s", status, body)
	}
}
