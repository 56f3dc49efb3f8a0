package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/metrics"
)

type apiMetrics struct {
	execs       *metrics.CounterVec
	execSeconds *metrics.Histogram
	errors      *metrics.CounterVec
}

func registerMetrics(r *metrics.Registry) apiMetrics {
	return apiMetrics{
		execs:       r.NewCounterVec("sandboxd_exec_total", "Commands run through exec and exec/stream, by kind.", "kind"),
		execSeconds: r.NewHistogram("sandboxd_exec_seconds", "Time from receiving an exec call to its last byte, including any sandbox start.", metrics.DefaultLatencyBuckets),
		errors:      r.NewCounterVec("sandboxd_errors_total", "Error answers and error events, by code.", "code"),
	}
}

func (s *Server) countError(code api.Code) { s.m.errors.Inc(string(code)) }

// observeExec records the count and latency of a call whose route has a
// metric kind (agentapi.Route.Metric: exec's "buffered" and "stream")
// when it ends.
func (s *Server) observeExec(kind string, start time.Time) {
	if kind == "" {
		return
	}
	s.m.execs.Inc(kind)
	s.m.execSeconds.Observe(time.Since(start).Seconds())
}

// countAgentError counts the code of an error answer from an agent. The
// body is small JSON; it is read and put back.
func (s *Server) countAgentError(resp *http.Response) {
	if resp.StatusCode < 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(data), resp.Body), resp.Body}
	if err != nil {
		return
	}
	var e api.Error
	if json.Unmarshal(data, &e) == nil && e.Code != "" {
		s.countError(e.Code)
	}
}
