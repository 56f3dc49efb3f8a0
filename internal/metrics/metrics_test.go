package metrics

import (
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("sandboxd_errors_total", "Errors by code.", "code")
	c.Inc("FILE_NOT_FOUND")
	c.Inc("FILE_NOT_FOUND")
	c.Inc(`we"ird`)
	r.NewGaugeFunc("sandboxd_sandboxes", "Sandboxes by state.", "state", func() map[string]float64 {
		return map[string]float64{"running": 3, "sleeping": 1}
	})
	h := r.NewHistogram("sandboxd_wake_seconds", "Wake latency.", []float64{0.01, 0.1})
	h.Observe(0.005)
	h.Observe(0.05)
	h.Observe(5)
	var b strings.Builder
	r.Write(&b)
	out := b.String()
	for _, want := range []string{
		`sandboxd_errors_total{code="FILE_NOT_FOUND"} 2`,
		`sandboxd_errors_total{code="we\"ird"} 1`,
		`sandboxd_sandboxes{state="running"} 3`,
		`sandboxd_wake_seconds_bucket{le="0.01"} 1`,
		`sandboxd_wake_seconds_bucket{le="0.1"} 2`,
		`sandboxd_wake_seconds_bucket{le="+Inf"} 3`,
		`sandboxd_wake_seconds_count 3`,
		"# TYPE sandboxd_wake_seconds histogram",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
}
