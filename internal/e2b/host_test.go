package e2b

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/sandboxd/sandboxd/internal/copybuf"
)

// TestServePortBorrowsItsCopyBuffer: an answer through the host proxy
// takes its copy buffer from the daemon's pool, not a fresh 32 KiB per
// response.
func TestServePortBorrowsItsCopyBuffer(t *testing.T) {
	if copybuf.RaceDetector {
		t.Skip("the race detector's sync.Pool drops a quarter of the buffers given back: allocations say nothing of borrowing")
	}
	daemon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	defer daemon.Close()
	s, err := New(Options{BaseURL: daemon.URL, Token: "tok", StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler), Transport: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	serve := func() {
		w := httptest.NewRecorder()
		s.servePort(w, httptest.NewRequest("GET", "http://8080-box1.e2b.test/", nil), entry{ID: "box1"}, 8080)
		if w.Code != 200 || w.Body.String() != "hello" {
			t.Fatalf("answer %d %q", w.Code, w.Body.String())
		}
	}
	serve()
	const calls = 50
	runtime.GC()
	before := copybuf.LargeAllocations()
	for range calls {
		serve()
	}
	runtime.GC()
	if n := copybuf.LargeAllocations() - before; n > calls/5 {
		t.Errorf("%d answers made %d allocations of 28 KiB or more, want about none", calls, n)
	}
}
