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
	"syscall"
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
//	daemon-cpu-*: the daemon's CPU time per small answer
//	cpu-*:        the CPU time per small answer of the host in all, of this
//	              process (the clients) and of the sandboxes, and the host's
//	              idle share, during the target's turns
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
	// client's connections are joined to the service's after their first
	// request (--preview-join, off by default since the fourteenth stop:
	// docs/api-ports.md). A baseline of this build (BENCH_BASELINE=
	// bin/sandboxd) measures the default, which serves every request.
	d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--log-level", "info", "--preview-join"}})
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
		// service is the CPU time of the sandbox serving it so far.
		service func() time.Duration
	}
	service := func() time.Duration { return sandboxCPU(d) }
	targets := []target{
		{"direct", direct, "http://127.0.0.1:8080/ok", 0, service},
		{"preview", previewClient(d), url + "ok", d.PID(), service},
	}
	baseArgs := append([]string{"--log-level", "info"}, strings.Fields(os.Getenv("BENCH_BASELINE_ARGS"))...)
	bo, ok := baselineOptions(baseArgs)
	if baseline := os.Getenv("BENCH_BASELINE"); !ok && baseline != "" {
		bo, ok = testdaemon.Options{Binary: baseline, Args: baseArgs}, true
	}
	if ok {
		bd := testdaemon.Start(b, bo)
		burl, _ := previewTarget(b, bd)
		targets = append(targets, target{"preview-baseline", previewClient(bd), burl + "ok", bd.PID(), func() time.Duration { return sandboxCPU(bd) }})
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
	var services []func() time.Duration
	for _, tg := range targets {
		clients = append(clients, tg.client)
		pids = append(pids, tg.pid)
		services = append(services, tg.service)
		urls = append(urls, tg.url)
		// Bulk: 1 MiB answers, where copying bytes costs more than
		// handling requests.
		bigURLs = append(bigURLs, strings.TrimSuffix(tg.url, "ok")+"big?n=1048576")
	}
	small, split := interleavedCPU(b, clients, urls, pids, services, envInt("BENCH_CONCURRENCY", 16), seconds)
	big, _ := interleavedCPU(b, clients, bigURLs, pids, services, 4, seconds)
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
				b.ReportMetric(split[i].daemon, "us/req")
				b.ReportMetric(0, "ns/op")
			})
		})
	}
	// Where the host's CPU time went per small answer: the clients (this
	// process), the service (the sandbox's cgroup) and the host in all,
	// whose rest is the kernel's work outside those processes (the
	// socket map's kworkers) and whatever else runs on the host; and how
	// much of the host's CPU time was idle. On 2 CPUs a target whose turns
	// leave CPU time idle is bound by a chain of wake-ups, not by CPU.
	for i, tg := range targets {
		b.Run("cpu-"+tg.name, func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.ReportMetric(split[i].host, "host-us/req")
				b.ReportMetric(split[i].client, "client-us/req")
				b.ReportMetric(split[i].service, "service-us/req")
				b.ReportMetric(split[i].idle, "host-idle-%")
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
	rates, _ := interleavedCPU(b, []*http.Client{c0, c1}, []string{url0, url1}, []int{0, 0}, nil, workers, d)
	return [2]float64{rates[0], rates[1]}
}

// cpuSplit is where the CPU time of a target's turns went, per request, in
// microseconds: the host's CPUs in all (time neither idle nor waiting for
// I/O), this process (the benchmark's clients), the daemon serving the
// target and the sandboxes serving it; and idle, the percentage of the
// host's CPU time that was idle.
type cpuSplit struct {
	host, client, daemon, service, idle float64
}

// interleavedCPU measures the throughput of each target (clients[i] getting
// urls[i]) for d, in turns of a quarter second, the order rotating from
// round to round, and returns their rates and where the CPU time of each
// target's turns went: the daemon's where pids[i] is not 0, the service's
// where services (nil for none) has a function for it.
func interleavedCPU(b *testing.B, clients []*http.Client, urls []string, pids []int, services []func() time.Duration, workers int, d time.Duration) (rates []float64, split []cpuSplit) {
	const turn = 250 * time.Millisecond
	done := make([]int64, len(urls))
	took := make([]time.Duration, len(urls))
	type spent struct{ daemon, client, service, busy, all time.Duration }
	cpu := make([]spent, len(urls))
	read := func(i int) spent {
		var s spent
		if pids[i] != 0 {
			s.daemon = cpuTime(pids[i])
		}
		if services != nil && services[i] != nil {
			s.service = services[i]()
		}
		s.client = selfCPU()
		s.busy, s.all = hostCPU()
		return s
	}
	for round, elapsed := 0, time.Duration(0); elapsed < d; round, elapsed = round+1, elapsed+turn {
		// Each round starts with the next target: a target that always
		// came second measured 10-30% more daemon CPU per request than
		// the same build third.
		for k := range urls {
			i := (round + k) % len(urls)
			s0 := read(i)
			n, dt := throughput(b, clients[i], urls[i], workers, turn)
			s1 := read(i)
			c := &cpu[i]
			c.daemon += s1.daemon - s0.daemon
			c.client += s1.client - s0.client
			c.service += s1.service - s0.service
			c.busy += s1.busy - s0.busy
			c.all += s1.all - s0.all
			done[i] += n
			took[i] += dt
		}
	}
	rates = make([]float64, len(urls))
	split = make([]cpuSplit, len(urls))
	for i := range rates {
		rates[i] = float64(done[i]) / took[i].Seconds()
		if n := float64(done[i]); n > 0 {
			c := cpu[i]
			perReq := func(t time.Duration) float64 { return float64(t.Microseconds()) / n }
			split[i] = cpuSplit{host: perReq(c.busy), client: perReq(c.client), daemon: perReq(c.daemon), service: perReq(c.service)}
			if c.all > 0 {
				split[i].idle = 100 * float64(c.all-c.busy) / float64(c.all)
			}
		}
	}
	return rates, split
}

// selfCPU is the CPU time (user and system) this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostCPU is the CPU time of all the host's CPUs so far (/proc/stat's cpu
// line): busy, and in all (busy, idle and waiting for I/O). Guest time is
// already counted in user time; time the hypervisor took (steal) is in
// neither.
func hostCPU() (busy, all time.Duration) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for k, v := range f[1:8] { // user nice system idle iowait irq softirq
		var ticks int64
		fmt.Sscan(v, &ticks)
		t := time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
		all += t
		if k != 3 && k != 4 {
			busy += t
		}
	}
	return busy, all
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
