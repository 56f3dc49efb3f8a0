package agent

import (
	"log/slog"
	"net/http"
	"time"
)

// logRequests logs each request when it ends, with the request ID the
// daemon passed on (requestid.Middleware runs first): at debug level, or
// at info when the agent failed it (5xx) or a command was killed on its
// timeout (408), the requests an operator looks for in the agent's log.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		level := slog.LevelDebug
		if sw.status >= 500 || sw.status == http.StatusRequestTimeout {
			level = slog.LevelInfo
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path,
			"status", sw.status, "took", time.Since(start))
	})
}

// statusWriter notes the status of a response. Unwrap lets
// http.ResponseController (flushes, hijacks for terminals) reach the real
// writer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
