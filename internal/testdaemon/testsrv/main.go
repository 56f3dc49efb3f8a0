// Command testsrv is a small web service that tests and benchmarks run
// inside sandboxes to exercise preview URLs: it echoes requests, streams
// bodies and events, redirects, and echoes WebSocket messages. It is built
// static by internal/testdaemon (BuildTestServer) and copied into a
// sandbox; it is not part of sandboxd.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/sandboxd/sandboxd/internal/testdaemon/xorshift"
)

func main() {
	addr := flag.String("addr", "0.0.0.0:8080", "listen address")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/", echo)
	mux.HandleFunc("/stream", stream)
	mux.HandleFunc("/big", big)
	mux.HandleFunc("/sse", sse)
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/target?from=redirect", http.StatusFound)
	})
	mux.HandleFunc("/ws", wsEcho)
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	// /hugeheader?bytes=N answers with a header of N bytes (default 9 MiB),
	// as a hostile service would to grow the proxy's memory.
	mux.HandleFunc("/hugeheader", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("bytes"))
		if err != nil || n <= 0 || n > 64<<20 {
			n = 9 << 20
		}
		w.Header().Set("X-Huge", strings.Repeat("x", n))
		w.Write([]byte("huge"))
	})
	// /hang never answers; it returns when the client goes.
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _ := os.Hostname()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>testsrv</title><h1 id=greeting>hello from %s</h1><p>%s %s</p>", host, r.Method, r.URL.Path)
	})
	log.Fatal(http.ListenAndServe(*addr, mux))
}

// Echo is what /echo/ answers.
type Echo struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	Query    string              `json:"query"`
	Host     string              `json:"host"`
	Header   map[string][]string `json:"header"`
	BodyLen  int64               `json:"bodyLen"`
	BodySHA  string              `json:"bodySha"`
	Hostname string              `json:"hostname"`
}

func echo(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, _ := io.Copy(h, r.Body)
	host, _ := os.Hostname()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Echo-Method", r.Method)
	json.NewEncoder(w).Encode(Echo{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Host: r.Host,
		Header: r.Header, BodyLen: n, BodySHA: hex.EncodeToString(h.Sum(nil)), Hostname: host})
}

// stream echoes the body as it arrives.
func stream(w http.ResponseWriter, r *http.Request) {
	http.NewResponseController(w).EnableFullDuplex()
	w.Header().Set("Content-Type", "application/octet-stream")
	buf := make([]byte, 64<<10)
	for {
		n, err := r.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// big sends the first n bytes of the xorshift stream (the same every
// time), which a test checks its download against.
func big(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	buf := make([]byte, 64<<10)
	src := xorshift.New()
	for n > 0 {
		k := min(int64(len(buf)), n)
		src.Read(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
		n -= k
	}
}

// sse sends n events, delay apart.
func sse(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	delay, _ := time.ParseDuration(r.URL.Query().Get("delay"))
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	for i := 0; i < n; i++ {
		if i > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
		w.(http.Flusher).Flush()
	}
}

func wsEcho(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(16 << 20)
	for {
		typ, data, err := c.Read(r.Context())
		if err != nil {
			return
		}
		if err := c.Write(r.Context(), typ, data); err != nil {
			return
		}
	}
}
