package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/network"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkPreview compares a service in a sandbox reached through its
// preview URL (client → daemon's listener → proxy → a connection dialled
// inside the sandbox's network namespace → service) with the same service
// reached directly from inside the namespace (client → connection dialled
// inside the namespace → service). Both clients are Go HTTP/1.1 clients
// with keep-alive in this process, on loopback; the service is testsrv's
// /ok (a two-byte answer), so the numbers are the proxy's own cost, not
// the service's.
//
//	latency-*:    one request at a time; p50/p95/p99 of BENCH_N (default 100) × 20 requests
//	throughput-*: BENCH_CONCURRENCY (default 16) clients for BENCH_SECONDS (default 5) s
//	              per target, the targets taking turns every 250 ms; req/s
func BenchmarkPreview(b *testing.B) {
	// Info level: the test daemon logs every request at debug level.
	d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--log-level", "info"}})
	sb := d.Client.Sandbox("bench-preview")
	testdaemon.StartTestServer(b, sb, "0.0.0.0:8080")
	ctx := context.Background()
	p, err := sb.ExposePort(ctx, 8080)
	if err != nil {
		b.Fatal(err)
	}
	netns := onlyNetns(b, d)
	daemonAddr := strings.TrimPrefix(d.URL, "http://")
	direct := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return network.DialContext(ctx, netns, "tcp", "127.0.0.1:8080")
		},
		MaxIdleConnsPerHost: 256, DisableCompression: true,
	}}
	preview := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, network, daemonAddr)
		},
		MaxIdleConnsPerHost: 256, DisableCompression: true,
	}}
	targets := []struct {
		name   string
		client *http.Client
		url    string
	}{
		{"direct", direct, "http://127.0.0.1:8080/ok"},
		{"preview", preview, p.URL + "ok"},
	}
	medians := map[string]time.Duration{}
	rates := map[string]float64{}
	for _, tg := range targets {
		get(b, tg.client, tg.url) // warm: connection, sandbox, pools
		b.Run("latency-"+tg.name, func(b *testing.B) {
			once(b, func(b *testing.B) {
				s := measure(b, sampleCount()*20, func(int) { get(b, tg.client, tg.url) })
				s.report(b)
				medians[tg.name] = s.percentile(50)
			})
		})
	}
	// Throughput: the two targets take turns in short windows, so that a
	// shared machine's changing load weighs on both alike.
	seconds := time.Duration(envInt("BENCH_SECONDS", 5)) * time.Second
	small := interleaved(b, targets[0].client, targets[1].client, targets[0].url, targets[1].url, envInt("BENCH_CONCURRENCY", 16), seconds)
	bigURL := func(u string) string { return strings.TrimSuffix(u, "ok") + "big?n=1048576" }
	// Bulk: 1 MiB answers, where copying bytes costs more than handling
	// requests.
	big := interleaved(b, targets[0].client, targets[1].client, bigURL(targets[0].url), bigURL(targets[1].url), 4, seconds)
	for i, tg := range targets {
		b.Run("throughput-"+tg.name, func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.ReportMetric(small[i], "req/s")
				b.ReportMetric(0, "ns/op")
				b.Logf("%.0f req/s", small[i])
				rates[tg.name] = small[i]
			})
		})
	}
	for i, tg := range targets {
		b.Run("throughput-1MiB-"+tg.name, func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.ReportMetric(big[i], "req/s")
				b.ReportMetric(big[i], "MiB/s")
				b.ReportMetric(0, "ns/op")
				rates["1MiB-"+tg.name] = big[i]
			})
		})
	}
	if rates["direct"] > 0 && rates["1MiB-direct"] > 0 {
		// Printed, not logged: a parent benchmark's log is hidden.
		fmt.Printf("BenchmarkPreview summary: throughput preview/direct %.0f%% (small answers), %.0f%% (1 MiB answers); added latency at p50 %s\n",
			100*rates["preview"]/rates["direct"], 100*rates["1MiB-preview"]/rates["1MiB-direct"], medians["preview"]-medians["direct"])
	}
}

func get(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
}

// interleaved measures the throughput of two targets for d each, in turns
// of a quarter second, and returns their rates.
func interleaved(b *testing.B, c0, c1 *http.Client, url0, url1 string, workers int, d time.Duration) [2]float64 {
	const turn = 250 * time.Millisecond
	var done [2]int64
	var took [2]time.Duration
	for spent := time.Duration(0); spent < d; spent += turn {
		for i, t := range []struct {
			c   *http.Client
			url string
		}{{c0, url0}, {c1, url1}} {
			n, dt := throughput(b, t.c, t.url, workers, turn)
			done[i] += n
			took[i] += dt
		}
	}
	return [2]float64{float64(done[0]) / took[0].Seconds(), float64(done[1]) / took[1].Seconds()}
}

// throughput runs workers clients in a closed loop for d and returns the
// completed requests and the time they took.
func throughput(b *testing.B, c *http.Client, url string, workers int, d time.Duration) (int64, time.Duration) {
	var done atomic.Int64
	var failed atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				resp, err := c.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					done.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Errorf("%d requests failed", n)
	}
	return done.Load(), time.Since(start)
}

// onlyNetns returns the network namespace of the daemon's one sandbox.
func onlyNetns(b *testing.B, d *testdaemon.Daemon) string {
	entries, err := os.ReadDir(filepath.Join(d.RunDir, "netns"))
	if err != nil || len(entries) != 1 {
		b.Fatalf("want one sandbox namespace in %s/netns: %v %v", d.RunDir, entries, err)
	}
	return filepath.Join(d.RunDir, "netns", entries[0].Name())
}

func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil && n > 0 {
			return n
		}
	}
	return def
}
