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
//
// With BENCH_BASELINE_BIN_DIR=DIR (another build's sandboxd and
// sandbox-agent) or BENCH_BASELINE=PATH (another build's sandboxd, with
// this build's agent), a second daemon of that build serves the same
// service in a sandbox of its own, and its preview URL is a third target
// ("preview-baseline"), measured in the same turns: before and after a
// change, side by side in one run. BENCH_BASELINE_ARGS adds flags to the
// baseline daemon (say, --preview-join=false for this build serving every
// request itself).
func BenchmarkPreview(b *testing.B) {
	// Info level: the test daemon logs every request at debug level. The
	// daemon's default flags: the client's connections are joined to the
	// service's after their first request (--preview-join).
	d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--log-level", "info"}})
	url, netns := previewTarget(b, d)
	direct := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return network.DialContext(ctx, netns, "tcp", "127.0.0.1:8080")
		},
		MaxIdleConnsPerHost: 256, DisableCompression: true,
	}}
	type target struct {
		name   string
		client *http.Client
		url    string
		pid    int // the daemon serving it, 0 for none
	}
	targets := []target{
		{"direct", direct, "http://127.0.0.1:8080/ok", 0},
		{"preview", previewClient(d), url + "ok", d.PID()},
	}
	baseArgs := append([]string{"--log-level", "info"}, strings.Fields(os.Getenv("BENCH_BASELINE_ARGS"))...)
	bo, ok := baselineOptions(baseArgs)
	if baseline := os.Getenv("BENCH_BASELINE"); !ok && baseline != "" {
		bo, ok = testdaemon.Options{Binary: baseline, Args: baseArgs}, true
	}
	if ok {
		bd := testdaemon.Start(b, bo)
		burl, _ := previewTarget(b, bd)
		targets = append(targets, target{"preview-baseline", previewClient(bd), burl + "ok", bd.PID()})
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
	var clients []*http.Client
	var urls, bigURLs []string
	var pids []int
	for _, tg := range targets {
		clients = append(clients, tg.client)
		pids = append(pids, tg.pid)
		urls = append(urls, tg.url)
		// Bulk: 1 MiB answers, where copying bytes costs more than
		// handling requests.
		bigURLs = append(bigURLs, strings.TrimSuffix(tg.url, "ok")+"big?n=1048576")
	}
	small, cpu := interleavedCPU(b, clients, urls, pids, envInt("BENCH_CONCURRENCY", 16), seconds)
	big, _ := interleavedCPU(b, clients, bigURLs, pids, 4, seconds)
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
	// The daemon's CPU time (user and system) per small answer: what the
	// proxy costs, which the machine's load moves far less than rates.
	for i, tg := range targets {
		if tg.pid == 0 {
			continue
		}
		b.Run("daemon-cpu-"+tg.name, func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.ReportMetric(cpu[i], "us/req")
				b.ReportMetric(0, "ns/op")
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
		if _, ok := rates["preview-baseline"]; ok {
			fmt.Printf("BenchmarkPreview baseline (%s%s %s): throughput preview/direct %.0f%% (small answers), %.0f%% (1 MiB answers); added latency at p50 %s\n",
				os.Getenv("BENCH_BASELINE_BIN_DIR"), os.Getenv("BENCH_BASELINE"), os.Getenv("BENCH_BASELINE_ARGS"), 100*rates["preview-baseline"]/rates["direct"], 100*rates["1MiB-preview-baseline"]/rates["1MiB-direct"],
				medians["preview-baseline"]-medians["direct"])
		}
	}
}

// previewTarget starts testsrv on port 8080 of a sandbox of d, exposes
// it, and returns its preview URL and the sandbox's network namespace.
func previewTarget(b *testing.B, d *testdaemon.Daemon) (string, string) {
	sb := d.Client.Sandbox("bench-preview")
	testdaemon.StartTestServer(b, sb, "0.0.0.0:8080")
	p, err := sb.ExposePort(context.Background(), 8080)
	if err != nil {
		b.Fatal(err)
	}
	return p.URL, onlyNetns(b, d)
}

// previewClient is a keep-alive client whose every connection goes to d.
func previewClient(d *testdaemon.Daemon) *http.Client {
	daemonAddr := strings.TrimPrefix(d.URL, "http://")
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, network, daemonAddr)
		},
		MaxIdleConnsPerHost: 256, DisableCompression: true,
	}}
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
	rates, _ := interleavedCPU(b, []*http.Client{c0, c1}, []string{url0, url1}, []int{0, 0}, workers, d)
	return [2]float64{rates[0], rates[1]}
}

// interleavedCPU measures the throughput of each target (clients[i] getting
// urls[i]) for d, in turns of a quarter second, the order rotating from
// round to round, and returns their rates
// and, where pids[i] is not 0, the CPU time process pids[i] spent per
// request during the target's turns, in microseconds.
func interleavedCPU(b *testing.B, clients []*http.Client, urls []string, pids []int, workers int, d time.Duration) (rates, cpuPerReq []float64) {
	const turn = 250 * time.Millisecond
	done := make([]int64, len(urls))
	took := make([]time.Duration, len(urls))
	cpu := make([]time.Duration, len(urls))
	for round, spent := 0, time.Duration(0); spent < d; round, spent = round+1, spent+turn {
		// Each round starts with the next target: a target that always
		// came second measured 10-30% more daemon CPU per request than
		// the same build third.
		for k := range urls {
			i := (round + k) % len(urls)
			var c0 time.Duration
			if pids[i] != 0 {
				c0 = cpuTime(pids[i])
			}
			n, dt := throughput(b, clients[i], urls[i], workers, turn)
			if pids[i] != 0 {
				cpu[i] += cpuTime(pids[i]) - c0
			}
			done[i] += n
			took[i] += dt
		}
	}
	rates = make([]float64, len(urls))
	cpuPerReq = make([]float64, len(urls))
	for i := range rates {
		rates[i] = float64(done[i]) / took[i].Seconds()
		if done[i] > 0 {
			cpuPerReq[i] = float64(cpu[i].Microseconds()) / float64(done[i])
		}
	}
	return rates, cpuPerReq
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
