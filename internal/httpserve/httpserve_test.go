package httpserve

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestGuardClosesConnectionsPastItsBound: past max open connections a new
// one is closed at once; one closed by its client, or hijacked by a
// handler, makes room again.
func TestGuardClosesConnectionsPastItsBound(t *testing.T) {
	const max = 8
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			// Kept open by the handler's new owner, as a WebSocket is.
			t.Cleanup(func() { c.Close() })
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := guard(&http.Server{Handler: mux}, "test", slog.New(slog.DiscardHandler), max)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	ask := func(path string) bool {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}
	answered := 0
	for range max + 4 {
		if ask("/") {
			answered++
		}
	}
	if answered != max {
		t.Fatalf("%d of %d connections answered, want %d", answered, max+4, max)
	}
	// Let one go: there is room for one more, after the server has seen
	// it close.
	held[0].Close()
	if !eventually(func() bool { return ask("/") }) {
		t.Error("no room after a connection closed")
	}
	// A hijacked connection leaves the count (it has bounds of its own).
	held[1].Close()
	if !eventually(func() bool { return ask("/hijack") }) {
		t.Fatal("the hijacking call was not answered")
	}
	if !ask("/") {
		t.Error("a hijacked connection still counts")
	}
}

func eventually(f func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if f() {
			return true
		}
	}
	return false
}
