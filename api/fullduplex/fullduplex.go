// Package fullduplex lets an HTTP/1 handler answer while its request's body
// still arrives, and ends such a handler on a connection the caller can use
// again. It is shared by the daemon's proxies, the cluster gateway and the Go
// SDK's PreviewHandler, which all pass bodies on to a service or agent that
// may answer before it has read them, or cannot be reached at all.
package fullduplex

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// Enable lets w's handler write its answer while it still reads the
// request's body: without it, the HTTP/1 server drops the rest of the body
// once the answer starts. HTTP/2 is always full duplex and says it cannot
// (the error). A handler that enables it calls EndBody once it answered.
func Enable(w http.ResponseWriter) error {
	return http.NewResponseController(w).EnableFullDuplex()
}

// EndBody reads the rest of a body that r's handler left unread while the
// handler still runs. Full duplex leaves that to the server after the
// handler, which reads it once it has stopped watching the connection: the
// read that meets the body's end starts the watch again, and the
// connection's next request then panics the server ("invalid concurrent
// Body.Read call", golang/go#68560, open), which drops the caller's
// connection. The answer is flushed first, as the server does, so a caller
// learns it before it sends the rest. Like the server, EndBody reads at most
// 256 KiB; past that the server closes the connection instead. Unlike the
// server, it waits at most DefaultEndBodyWait for them (EndBodyWithin).
//
// Call it when the handler answered; not on the way out of a panic (the
// server closes the connection then, and a read could wait for a caller
// that sends nothing more).
func EndBody(w http.ResponseWriter, r *http.Request) {
	EndBodyWithin(w, r, DefaultEndBodyWait)
}

// DefaultEndBodyWait is how long EndBody waits for the rest of a body.
const DefaultEndBodyWait = 10 * time.Second

// EndBodyWithin is EndBody waiting at most wait for the rest of the body.
// A caller that has not sent it by then has its connection closed once
// the answer is out: what it sends later could only be read as the
// connection's next request, a request nobody made (the server's own read
// after a handler has no bound at all, and holds the connection). w is the
// server's ResponseWriter or wraps it with an Unwrap method, as
// http.ResponseController needs.
func EndBodyWithin(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	switch {
	case r.ProtoMajor != 1 || r.Body == nil || r.Body == http.NoBody:
	case r.Context().Err() != nil:
		// The caller left: no answer, and nothing to read.
	case r.Header.Get("Upgrade") != "":
		// The connection may be the handler's now.
	case r.Header.Get("Expect") != "":
		// 100-continue: the server does not keep a connection whose body
		// it did not read to its end, and the caller may never send it.
	default:
		rc := http.NewResponseController(w)
		rc.Flush()
		rc.SetReadDeadline(time.Now().Add(wait))
		if err := r.Body.Close(); err != nil {
			closeAfterAnswer(w)
		}
		rc.SetReadDeadline(time.Time{})
	}
}

// closeAfterAnswer makes the server close w's connection once the handler
// returned and the answer is out, though its headers went without
// "Connection: close". The server offers one way: a MaxBytesReader over
// the limit tells its ResponseWriter so (and the server does not read the
// connection again). The reader's bytes need not be the request's.
func closeAfterAnswer(w http.ResponseWriter) {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			break
		}
		w = u.Unwrap()
	}
	http.MaxBytesReader(w, io.NopCloser(strings.NewReader("x")), 0).Read(make([]byte, 1))
}
