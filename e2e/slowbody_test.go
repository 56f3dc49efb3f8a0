package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestSlowBodiesAreCutOff repeats issue 11, item 15: clients holding the
// token send JSON bodies a byte a second, which used to hold their
// connections as long as they liked. With --body-timeout 3s each gets
// 408 REQUEST_TIMEOUT and its connection closed, while its trickle still
// goes on, on the daemon's own routes and on forwarded calls alike.
func TestSlowBodiesAreCutOff(t *testing.T) {
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--body-timeout", "3s"}})
	ctx := ctxT(t, 2*time.Minute)
	if _, err := d.Client.Sandbox("slow").Exec(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(d.URL, "http://")
	const trickle = 40 * time.Second // far beyond the timeout
	type result struct {
		path, answer string
		took         time.Duration
	}
	paths := []string{"/v1/sandboxes/slow", "/v1/sandboxes/slow/exec", "/v1/sandboxes/slow/ports", "/v1/sandboxes/slow/exec", "/v1/sandboxes/other"}
	results := make(chan result, len(paths))
	for _, path := range paths {
		go func() {
			method := "POST"
			if path == "/v1/sandboxes/slow" || path == "/v1/sandboxes/other" {
				method = "PUT"
			}
			start := time.Now()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				results <- result{path, "dial: " + err.Error(), 0}
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
				method, path, addr, d.Token)
			go func() {
				for time.Since(start) < trickle {
					time.Sleep(time.Second)
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
			conn.SetReadDeadline(start.Add(trickle + 10*time.Second))
			raw, _ := io.ReadAll(conn)
			results <- result{path, string(raw), time.Since(start)}
		}()
	}
	for range paths {
		r := <-results
		head, body, _ := strings.Cut(r.answer, "\r\n\r\n")
		if !strings.HasPrefix(head, "HTTP/1.1 408") || errorCode(body) != api.CodeRequestTimeout {
			t.Errorf("%s: answer %q after %s, want 408 REQUEST_TIMEOUT", r.path, r.answer, r.took)
		}
		if r.took > trickle-5*time.Second {
			t.Errorf("%s: the connection was held %s, as long as the client liked", r.path, r.took)
		}
		t.Logf("%s: %s after %s", r.path, strings.SplitN(head, "\r\n", 2)[0], r.took.Round(100*time.Millisecond))
	}
}
