package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
			answer, took := trickleBody(addr, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
				method, path, addr, d.Token), trickle)
			results <- result{path, answer, took}
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

// trickle is how long a slow client sends its body: far beyond the
// tests' --body-timeout of 3 s.
const trickle = 40 * time.Second

// trickleBody sends head (a request's head and the start of its body) to
// addr, then a byte a second for trickleFor, and returns what the daemon
// answered until it closed the connection, and when it did.
func trickleBody(addr, head string, trickleFor time.Duration) (string, time.Duration) {
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error(), 0
	}
	defer conn.Close()
	io.WriteString(conn, head)
	go func() {
		for time.Since(start) < trickleFor {
			time.Sleep(time.Second)
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(start.Add(trickleFor + 10*time.Second))
	raw, _ := io.ReadAll(conn)
	return string(raw), time.Since(start)
}

// TestSlowE2BBodiesAreCutOff: the same on the E2B layer, whose bodies
// were read without a bound in time: its control plane (a create), a
// unary envd call and a streaming one (a process start, whose one
// enveloped message is read before the stream starts). Each is answered
// with its protocol's timeout error at --body-timeout and its connection
// closed, while the trickle goes on.
func TestSlowE2BBodiesAreCutOff(t *testing.T) {
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--body-timeout", "3s"}})
	addr := strings.TrimPrefix(d.URL, "http://")
	var created struct{ SandboxID, EnvdAccessToken string }
	req, _ := http.NewRequest("POST", d.URL+"/e2b/sandboxes", strings.NewReader(`{"templateID":"base"}`))
	req.Header.Set("X-API-KEY", d.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if err != nil || created.SandboxID == "" {
		t.Fatalf("creating an E2B sandbox: %d, %v", resp.StatusCode, err)
	}
	t.Cleanup(func() { d.Client.Sandbox(created.SandboxID).Destroy(ctxT(t, time.Minute)) })
	envd := fmt.Sprintf("E2b-Sandbox-Id: %s\r\nX-Access-Token: %s\r\n", created.SandboxID, created.EnvdAccessToken)
	heads := map[string]string{
		"control":    fmt.Sprintf("POST /e2b/sandboxes HTTP/1.1\r\nHost: %s\r\nX-API-KEY: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", addr, d.Token),
		"unary":      fmt.Sprintf("POST /e2b/process.Process/SendSignal HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", addr, envd),
		"stream":     fmt.Sprintf("POST /e2b/process.Process/Start HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/connect+json\r\nContent-Length: 100\r\n\r\n\x00\x00\x00\x00\x5f{", addr, envd),
		"stream-hdr": fmt.Sprintf("POST /e2b/process.Process/Start HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/connect+json\r\nContent-Length: 100\r\n\r\n\x00", addr, envd),
	}
	type result struct {
		name, answer string
		took         time.Duration
	}
	results := make(chan result, len(heads))
	for name, head := range heads {
		go func() {
			answer, took := trickleBody(addr, head, trickle)
			results <- result{name, answer, took}
		}()
	}
	for range heads {
		r := <-results
		if !strings.Contains(r.answer, "did not arrive within 3s") {
			t.Errorf("%s: answer %q after %s, want a timeout", r.name, r.answer, r.took)
		}
		if r.took > trickle-5*time.Second {
			t.Errorf("%s: the connection was held %s, as long as the client liked", r.name, r.took)
		}
		t.Logf("%s: %s after %s", r.name, strings.SplitN(r.answer, "\r\n", 2)[0], r.took.Round(100*time.Millisecond))
	}
}
