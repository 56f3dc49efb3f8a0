package bench

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkE2B measures the E2B layer with the official E2B JS SDK
// (e2e/testdata/e2bclient/bench.mjs, installed by `scripts/deps.sh test`):
// commands.run('true') through /e2b beside sandboxd's own exec of `true`
// and beside the same work (a login process of true and its log stream)
// through sandboxd's process API, from the same Node process, and Sandbox.create to the first command's
// result with a warm pool of one (refilled outside the measurement).
func BenchmarkE2B(b *testing.B) {
	dir, err := filepath.Abs("../e2e/testdata/e2bclient")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "e2b")); err != nil {
		b.Skip("needs the E2B SDK: scripts/deps.sh test installs it")
	}
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--warm-pool", "1", "--default-memory", "128Mi"}})
		cmd := exec.CommandContext(ctxFor(b), "node", "bench.mjs")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "BENCH_N="+strconv.Itoa(sampleCount()), "SANDBOX_URL="+d.URL,
			"E2B_API_KEY="+d.Token, "E2B_API_URL="+d.URL+"/e2b", "E2B_SANDBOX_URL="+d.URL+"/e2b")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("node bench.mjs: %v\n%s", err, stderr.String())
		}
		type pcts struct{ P50, P95, P99, N float64 }
		var res struct {
			Run, Exec, Process, CreateToFirstResult pcts
		}
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("reading %q: %v", out, err)
		}
		b.ReportMetric(res.Run.P50, "run-p50-ms")
		b.ReportMetric(res.Run.P95, "run-p95-ms")
		b.ReportMetric(res.Exec.P50, "exec-p50-ms")
		b.ReportMetric(res.Exec.P95, "exec-p95-ms")
		b.ReportMetric(res.Process.P50, "process-p50-ms")
		b.ReportMetric(res.Run.P50/res.Exec.P50, "run/exec-p50")
		b.ReportMetric(res.Run.P50/res.Process.P50, "run/process-p50")
		b.ReportMetric(res.CreateToFirstResult.P50, "create-to-result-p50-ms")
		b.ReportMetric(res.CreateToFirstResult.P95, "create-to-result-p95-ms")
		b.ReportMetric(0, "ns/op")
		b.Logf("n=%v commands.run('true') p50=%.2fms p95=%.2fms; sandboxd exec p50=%.2fms p95=%.2fms; sandboxd process (bash -l -c true) p50=%.2fms p95=%.2fms; create to first result p50=%.2fms p95=%.2fms",
			res.Run.N, res.Run.P50, res.Run.P95, res.Exec.P50, res.Exec.P95, res.Process.P50, res.Process.P95, res.CreateToFirstResult.P50, res.CreateToFirstResult.P95)
	})
}
