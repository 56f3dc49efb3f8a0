package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestHalfClosedClientGetsNoFalseSuccess repeats issue 11, item 6: a
// client sends a complete request and half-closes its side
// (shutdown(SHUT_WR)). That cancels the request's context; the daemon
// used to answer "200 OK" with an empty body although the command never
// ran. Now such a client gets either the real answer or none at all (the
// connection closes), never an empty success.
func TestHalfClosedClientGetsNoFalseSuccess(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 2*time.Minute)
	sb := d.Client.Sandbox("halfclose")
	if _, err := sb.Exec(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(d.URL, "http://")
	for _, tc := range []struct{ name, method, path, body string }{
		// The command takes long enough for the half-close to be seen
		// before any answer.
		{"exec", "POST", "/v1/sandboxes/halfclose/exec", `{"command":"sleep 2; echo done"}`},
		{"exec of a new sandbox", "POST", "/v1/sandboxes/halfclose-new/exec", `{"command":"sleep 2; echo done"}`},
		{"files/write", "POST", "/v1/sandboxes/halfclose/files/write", `{"path":"/tmp/x","content":"hi"}`},
		{"preview", "GET", "/v1/sandboxes/halfclose/ports/8080/proxy/", ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				tc.method, tc.path, addr, d.Token, len(tc.body), tc.body)
			if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			raw, err := io.ReadAll(conn)
			if err != nil && !strings.Contains(err.Error(), "connection reset") {
				t.Fatalf("reading the answer: %v", err)
			}
			answer := string(raw)
			head, body, _ := strings.Cut(answer, "\r\n\r\n")
			if strings.HasPrefix(head, "HTTP/1.1 2") && strings.TrimSpace(body) == "" || strings.Contains(head, "Content-Length: 0") && strings.HasPrefix(head, "HTTP/1.1 2") {
				t.Errorf("an empty success for a call that did not complete:\n%s", answer)
			}
			if answer != "" && !strings.Contains(body, "done") && !strings.Contains(body, "{") {
				t.Errorf("an answer without a body:\n%s", answer)
			}
			t.Logf("answer: %q", truncateForLog(answer, 200))
		})
	}
}

func truncateForLog(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
