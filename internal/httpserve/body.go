package httpserve

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// DefaultBodyTimeout bounds the time a handler waits for a body it reads
// whole (JSON, an RPC message) when no other is configured (the daemon's
// --body-timeout).
const DefaultBodyTimeout = 60 * time.Second

// ReadBody reads r's body to its end or to limit bytes, within timeout.
// Without a bound, a client could keep any number of connections, each
// with its goroutine and buffers, by sending its body a byte at a time.
// Streamed bodies (raw files, archives, uploads, previews) do not come
// here: they are as long as they are. A read past the deadline fails with
// os.ErrDeadlineExceeded.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, error) {
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		return readAll(r.Body, limit, r.ContentLength) // not a network connection
	}
	data, err := readAll(r.Body, limit, r.ContentLength)
	if err == nil && int64(len(data)) < limit {
		// The whole body is read: lift the deadline, because the server
		// reads the same connection in the background while the handler
		// works (to see a client leave), and a deadline passing then would
		// cancel the call. Otherwise it stays: after an answer to a body
		// that was too slow or too large, the server would read the rest
		// of it (to reuse the connection) at the client's pace.
		rc.SetReadDeadline(time.Time{})
	}
	return data, err
}

// readAll reads body to its end or to limit bytes, into a slice made for
// size bytes when size (a Content-Length) is known and under limit: an
// exec's body is under 100 bytes, and io.ReadAll starts with 512
// (bench/results/scale.txt).
func readAll(body io.Reader, limit, size int64) ([]byte, error) {
	if size <= 0 || size >= limit {
		return io.ReadAll(io.LimitReader(body, limit))
	}
	data := make([]byte, 0, size+1) // +1: room to read the end
	for {
		n, err := body.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if errors.Is(err, io.EOF) {
			return data, nil
		}
		if err != nil {
			return data, err
		}
		if len(data) == cap(data) {
			// Longer than said: read on as io.ReadAll would, to limit.
			rest, err := io.ReadAll(io.LimitReader(body, limit-int64(len(data))))
			return append(data, rest...), err
		}
	}
}
