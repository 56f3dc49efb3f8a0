package httpapi

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestSlowBodyIsCutOff: a JSON body that trickles in is cut off at the
// body timeout with 408 REQUEST_TIMEOUT.
func TestSlowBodyIsCutOff(t *testing.T) {
	s := New(Options{Token: "s3cret", Log: slog.New(slog.DiscardHandler), BodyTimeout: time.Second})
	srv := httptest.NewServer(s)
	defer srv.Close()
	for _, path := range []string{"/v1/sandboxes/demo", "/v1/sandboxes/demo/exec"} {
		method := "PUT"
		if strings.HasSuffix(path, "/exec") {
			method = "POST"
		}
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", method, path)
		go func() {
			for time.Since(start) < 20*time.Second {
				time.Sleep(200 * time.Millisecond)
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}()
		conn.SetReadDeadline(start.Add(30 * time.Second))
		raw, _ := io.ReadAll(conn)
		if !strings.HasPrefix(string(raw), "HTTP/1.1 408") || !strings.Contains(string(raw), "REQUEST_TIMEOUT") {
			t.Errorf("%s %s: %q after %s, want 408 REQUEST_TIMEOUT", method, path, raw, time.Since(start))
		}
		if took := time.Since(start); took > 15*time.Second {
			t.Errorf("%s %s: the connection was held %s, while the body trickled in", method, path, took)
		}
	}
}
