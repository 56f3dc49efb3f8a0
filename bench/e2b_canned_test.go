package bench

import (
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// startCannedEnvd serves, on loopback, what a server with no sandbox
// behind it would answer commands.run('true') and sandboxd's exec of
// `true`, at once: BenchmarkE2B times the SDK and the plain fetch
// against it, so what is left is each client's own work (the floor no
// server can go under). The Start answer comes in several shapes (the
// first path element): "sandboxd" is what sandboxd's E2B layer sends
// (the start event flushed as one chunk, then the end event, the end of
// stream and the terminating chunk in one write); "one-write" all of it
// in one chunked write; "length" all of it with a Content-Length.
// "exec" answers sandboxd's exec as its API does.
func startCannedEnvd(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: cannedEnvd()}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// The answers' bodies (and, in the handlers, headers) as sandboxd sends
// them for commands.run('true') and an exec of `true`.
var (
	cannedStart = connectEnvelope(0, `{"event":{"start":{"pid":4242}}}`)
	cannedEnd   = append(connectEnvelope(0, `{"event":{"end":{"exitCode":0,"exited":true,"status":"exit status 0"}}}`),
		connectEnvelope(2, `{}`)...)
	cannedExec = []byte(`{"success":true,"exitCode":0,"stdout":"","stderr":"","command":"true","sessionId":"default","duration":1}` + "\n")
)

func connectEnvelope(flag byte, msg string) []byte {
	b := make([]byte, 5, 5+len(msg))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

func cannedEnvd() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{shape}/process.Process/Start", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/connect+json")
		w.Header().Set("X-Request-Id", "cba229d666f4a6c7")
		all := append(append([]byte{}, cannedStart...), cannedEnd...)
		switch r.PathValue("shape") {
		case "sandboxd":
			w.WriteHeader(http.StatusOK)
			w.Write(cannedStart)
			http.NewResponseController(w).Flush()
			w.Write(cannedEnd)
		case "one-write":
			// A header of chunked keeps net/http from counting a short
			// answer's length.
			w.Header().Set("Transfer-Encoding", "chunked")
			w.Write(all)
		case "length":
			w.Header().Set("Content-Length", strconv.Itoa(len(all)))
			w.Write(all)
		default:
			http.NotFound(w, r)
		}
	})
	mux.HandleFunc("POST /exec", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "cba229d666f4a6c7")
		w.Header().Set("Content-Length", strconv.Itoa(len(cannedExec)))
		w.Write(cannedExec)
	})
	return mux
}
