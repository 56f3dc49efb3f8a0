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
	c.Inc("back\\slash\nline")
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
		`sandboxd_errors_total{code="back\\slash\nline"} 1`,
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

// TestView: a view shows only the series it keeps, under the values it
// gives, and no daemon-wide metric.
func TestView(t *testing.T) {
	r := NewRegistry()
	r.NewGaugeFunc("sandboxd_tenant_running", "Running by tenant.", "tenant", func() map[string]float64 {
		return map[string]float64{"team-a": 2, "team-b": 5}
	})
	r.NewCounterFunc("sandboxd_egress_denied_total", "Denied by sandbox.", "sandbox", func() map[string]float64 {
		return map[string]float64{"team-a/demo": 1, "team-b/demo": 7, "plain": 3}
	})
	r.NewCounterVec("sandboxd_errors_total", "Errors by code.", "code").Inc("X")
	r.NewCounterVec("sandboxd_sandbox_starts_total", "Starts.", "")
	r.NewHistogram("sandboxd_wake_seconds", "Wake latency.", []float64{0.1}).Observe(1)
	var b strings.Builder
	r.WriteView(&b, func(label, value string) (string, bool) {
		switch label {
		case "tenant":
			return value, value == "team-a"
		case "sandbox":
			local, ok := strings.CutPrefix(value, "team-a/")
			return local, ok
		}
		return "", false
	})
	want := `# HELP sandboxd_egress_denied_total Denied by sandbox.
# TYPE sandboxd_egress_denied_total counter
sandboxd_egress_denied_total{sandbox="demo"} 1
# HELP sandboxd_tenant_running Running by tenant.
# TYPE sandboxd_tenant_running gauge
sandboxd_tenant_running{tenant="team-a"} 2
`
	if got := b.String(); got != want {
		t.Errorf("view:\n%s\nwant:\n%s", got, want)
	}
}
