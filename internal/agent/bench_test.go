package agent

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"
)

// BenchmarkExecTrue is a warm exec of `true` over the unix socket: HTTP
// round trip, validation, and one command through the default session's
// shell. It also reports the median and 99th percentile latency.
func BenchmarkExecTrue(b *testing.B) {
	ta := startAgent(b)
	ta.run(b, "true") // the shell is up
	body := []byte(`{"command":"true"}`)
	var took []time.Duration
	for b.Loop() {
		start := time.Now()
		resp, err := ta.client.Post("http://agent/exec", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
}
