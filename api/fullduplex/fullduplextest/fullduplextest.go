// Package fullduplextest checks that an HTTP/1 server keeps a caller's
// connection after calls whose bodies its handler left unread, the case of
// golang/go#68560 that fullduplex.EndBody covers.
package fullduplextest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"
)

// Answer is what a call on the connection was answered.
type Answer struct {
	Status int
	Body   string
}

// KeepsConnection sends, on one connection to addr, the call whose request
// line and headers are head (no Content-Length, no blank line after them)
// twice with body: first the body whole, then only its first bytes, the
// rest once the answer's headers have come. Then it sends next, a request
// without a body. It fails t unless all three are answered on the
// connection, and returns their answers.
func KeepsConnection(t testing.TB, addr, head, body, next string) []Answer {
	t.Helper()
	conn, br := dial(t, addr)
	var answers []Answer
	for i, split := range []int{len(body), min(5, len(body))} {
		fmt.Fprintf(conn, "%s\r\nContent-Length: %d\r\n\r\n%s", head, len(body), body[:split])
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("call %d on the connection: %v", i+1, err)
		}
		io.WriteString(conn, body[split:])
		answers = append(answers, readAnswer(t, resp, fmt.Sprintf("call %d", i+1)))
	}
	fmt.Fprintf(conn, "%s\r\n\r\n", next)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("a call after them on the connection: %v", err)
	}
	return append(answers, readAnswer(t, resp, "the call after them"))
}

// ClosesStalledBody sends, on a connection to addr, the call whose request
// line and headers are head (as for KeepsConnection) with only the first
// bytes of its body, and reads the answer. It fails t unless the server
// then closes the connection within wait, and unless what the caller sends
// after that as the rest of the body (a request of its own) is never
// answered as a request.
func ClosesStalledBody(t testing.TB, addr, head string, wait time.Duration) {
	t.Helper()
	const first, rest = "the first bytes; ", "GET /not-a-request HTTP/1.1\r\nHost: x\r\n\r\n"
	conn, br := dial(t, addr)
	fmt.Fprintf(conn, "%s\r\nContent-Length: %d\r\n\r\n%s", head, len(first)+len(rest), first)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the call: %v", err)
	}
	readAnswer(t, resp, "the call")
	start := time.Now()
	conn.SetReadDeadline(start.Add(wait + 5*time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Errorf("the server sent more after the answer")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("the connection is still open %v after the answer, the body's rest still awaited", time.Since(start).Round(time.Millisecond))
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(conn, rest)
	if resp, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("the body's rest was answered as a request: %s", resp.Status)
	}
}

// dial opens a connection to addr for t, with a minute for everything
// on it, closed when t ends.
func dial(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute))
	return conn, bufio.NewReader(conn)
}

func readAnswer(t testing.TB, resp *http.Response, call string) Answer {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s's answer: %v", call, err)
	}
	return Answer{Status: resp.StatusCode, Body: string(b)}
}

// AnswerFirst is a service that sends its whole answer, "early", before it
// reads the request's body: a proxy in front of it gets the answer while it
// may still be passing the body on.
var AnswerFirst http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	rc.EnableFullDuplex()
	w.Header().Set("Content-Length", "5")
	io.WriteString(w, "early")
	rc.Flush()
	io.Copy(io.Discard, r.Body)
})

// ErrorLog is a server's ErrorLog for a test: it fails t on a panic the
// server recovered from (and logged), which dropped a connection, and logs
// its other lines. The server must be closed before t ends.
func ErrorLog(t testing.TB) *log.Logger {
	return log.New(panicCheck{t}, "", 0)
}

type panicCheck struct{ t testing.TB }

func (c panicCheck) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("http: panic serving")) {
		c.t.Errorf("the server: %s", p)
	} else {
		c.t.Logf("the server: %s", p)
	}
	return len(p), nil
}
