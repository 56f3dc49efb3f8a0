package httpapi

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex/fullduplextest"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/internal/image"
)

// A build streams its log while it reads its context, so its handler
// cannot know, when the answer's headers go out, whether the build will
// read the upload to its end: a refused build (invalid build args) reads
// none of it, and one that reads the tar to its end marker never reads the
// body's end. Either way the HTTP/1 server read the rest after the handler
// and then panicked on the connection (golang/go#68560). The caller gets
// the whole answer, says Connection: close, and then the connection ends,
// with no panic, also when the rest of the upload arrives after the answer.
func TestBuildAnswersWholeThenClosesTheConnection(t *testing.T) {
	srv := httptest.NewUnstartedServer(buildTestServer(t))
	srv.Config.ErrorLog = fullduplextest.ErrorLog(t)
	srv.Start()
	defer srv.Close()
	noDockerfile := tarOf(t, "README", "no Dockerfile here")
	padded := append(bytes.Clone(noDockerfile), make([]byte, 10240-len(noDockerfile))...)
	for _, tt := range []struct {
		name, query string
		body        []byte
		split       int // bytes sent before the answer
		codes       []api.Code
	}{
		{"refused before it reads", "name=refused&buildArg=1bad%3Dx", noDockerfile, 5, []api.Code{api.CodeInvalidImage}},
		// GNU tar and Python's tarfile pad to 10 KiB records: the build
		// stops at the end marker, before the padding.
		{"read to the tar's end marker", "name=nodockerfile", padded, len(padded),
			[]api.Code{api.CodeInvalidImage, api.CodeBuilderUnavailable}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute))
			fmt.Fprintf(conn, "POST /v1/images/build?%s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"+
				"Content-Type: application/x-tar\r\nContent-Length: %d\r\n\r\n%s", tt.query, len(tt.body), tt.body[:tt.split])
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			ev := lastBuildEvent(t, resp)
			if !resp.Close {
				t.Errorf("the answer's headers say the connection stays: %v", resp.Header)
			}
			if ev.Type != api.BuildEventError || !slices.Contains(tt.codes, ev.Code) {
				t.Errorf("last event %+v, want an error event with one of %v", ev, tt.codes)
			}
			// The rest of the upload comes after the answer: the server
			// reads it and closes the connection.
			conn.Write(tt.body[tt.split:])
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the answer: %q, %v; want the connection closed", rest, err)
			}
		})
	}
}

// A build's keepalive writes to the answer from a goroutine of its own,
// which has stopped before the handler returns: a keepalive written after
// it crashed the daemon (a nil bufio.Writer once the server reused the
// answer's buffer). With a keepalive every 50 us, many builds end while
// one is being written.
func TestBuildKeepaliveStopsBeforeTheHandlerReturns(t *testing.T) {
	defer func(d time.Duration) { buildKeepalive = d }(buildKeepalive)
	buildKeepalive = 50 * time.Microsecond
	srv := httptest.NewServer(buildTestServer(t))
	defer srv.Close()
	for range 200 {
		req, err := http.NewRequest("POST", srv.URL+"/v1/images/build?name=refused&buildArg=1bad%3Dx", strings.NewReader("abc"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if ev := lastBuildEvent(t, resp); ev.Code != api.CodeInvalidImage {
			t.Fatalf("last event %+v", ev)
		}
	}
}

// buildTestServer is a Server with an image store, for build calls.
func buildTestServer(t *testing.T) *Server {
	t.Helper()
	st, err := image.Open(image.Options{Dir: filepath.Join(t.TempDir(), "images"),
		InUse: func(context.Context) (map[string]bool, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{Token: "s3cret", Log: slog.New(slog.DiscardHandler), Images: st})
}

// lastBuildEvent reads a build's answer to its end (a complete chunked
// body) and returns its last event.
func lastBuildEvent(t *testing.T, resp *http.Response) api.BuildEvent {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), sse.ContentType) {
		t.Fatalf("answer %s, %v", resp.Status, resp.Header)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the answer is cut short: %v (read %q)", err, body)
	}
	var last api.BuildEvent
	r := sse.NewReader(bytes.NewReader(body))
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return last
		}
		if err != nil {
			t.Fatalf("the answer's events: %v (%q)", err, body)
		}
		last = api.BuildEvent{}
		if err := ev.Decode(&last); err != nil {
			t.Fatalf("event %q: %v", ev.Data, err)
		}
		last.Type = ev.Name
	}
}

// tarOf is a tar with one regular file, as archive/tar writes it: the end
// marker is its last 1 KiB, no record padding after it.
func tarOf(t *testing.T, name, content string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	io.WriteString(tw, content)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
