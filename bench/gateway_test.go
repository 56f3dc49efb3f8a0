package bench

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/gateway"
	"github.com/sandboxd/sandboxd/internal/gateway/gatewaytest"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkGatewayExec measures what a cluster's gateway adds to the warm
// exec round trip (POST /v1/sandboxes/{id}/exec of `true` in a sandbox's
// warm shell): one real node, the gateway's handler in front of it on
// loopback, and the same sandbox called directly and through the gateway,
// interleaved sample by sample. The directory is in memory
// (gatewaytest): on a cluster the gateway caches nodes (1 s) and
// placements (5 s), so a warm call asks the apiserver nothing either way.
// Goal (issue 18): added p50 <= 0.3 ms.
func BenchmarkGatewayExec(b *testing.B) {
	once(b, func(b *testing.B) {
		const token = "bench-gateway-token-0123456789abcdef"
		node := testdaemon.Start(b, testdaemon.Options{Token: token, Args: []string{"--default-memory", "256Mi"}})
		dir := gatewaytest.New()
		dir.Add(gateway.Node{Name: "n1", URL: node.URL, Ready: true, ReportedAt: time.Now()})
		srv := httptest.NewServer(gateway.New(gateway.Options{Directory: dir, Token: token,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
		b.Cleanup(srv.Close)
		via, err := client.New(srv.URL, client.WithToken(token))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		through, direct := via.Sandbox("gw-bench"), node.Client.Sandbox("gw-bench")
		for range 20 { // the sandbox, both paths' connections and the shell, warm
			if _, err := through.Exec(ctx, "true"); err != nil {
				b.Fatal(err)
			}
			direct.Exec(ctx, "true")
		}
		n := sampleCount()
		var d, g samples
		for i := range 2 * n {
			sb := direct
			if i%2 == 1 {
				sb = through
			}
			start := time.Now()
			if _, err := sb.Exec(ctx, "true"); err != nil {
				b.Fatal(err)
			}
			if i%2 == 1 {
				g = append(g, time.Since(start))
			} else {
				d = append(d, time.Since(start))
			}
		}
		ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
		b.ReportMetric(ms(d.percentile(50)), "direct-p50-ms")
		b.ReportMetric(ms(g.percentile(50)), "gateway-p50-ms")
		b.ReportMetric(ms(d.percentile(95)), "direct-p95-ms")
		b.ReportMetric(ms(g.percentile(95)), "gateway-p95-ms")
		b.ReportMetric(ms(g.percentile(50)-d.percentile(50)), "added-p50-ms")
		b.ReportMetric(float64(n), "samples")
		b.ReportMetric(0, "ns/op")
		b.Logf("n=%d warm exec of true: direct p50=%.3fms p95=%.3fms; through the gateway p50=%.3fms p95=%.3fms; added p50=%.3fms",
			n, ms(d.percentile(50)), ms(d.percentile(95)), ms(g.percentile(50)), ms(g.percentile(95)), ms(g.percentile(50)-d.percentile(50)))
	})
}
