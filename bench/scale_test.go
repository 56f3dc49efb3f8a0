package bench

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// Scale benchmarks, on daemons with the default flags (warm pool of 2,
// default memory, internet networking, admission by available memory)
// except where a test daemon must differ (its own directories, names and
// subnet; a /16 so that thousands of sandboxes get addresses).

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// BenchmarkConcurrentCreates: BENCH_CREATES (default 100) first calls
// (`exec true`) on new IDs, all at once; latency of each from nothing to
// the result, and how many failed (goal: p99 <= 500 ms, 0 errors). The
// daemon's warm pool is BENCH_WARM_POOL (default 2, the default flags'),
// full when the burst begins: a burst is absorbed by a pool sized for it.
func BenchmarkConcurrentCreates(b *testing.B) {
	once(b, func(b *testing.B) {
		pool := envInt("BENCH_WARM_POOL", 2)
		d := testdaemon.Start(b, testdaemon.Options{
			Subnet: envString("BENCH_SUBNET", "10.250.0.0/16"),
			Args:   []string{"--warm-pool", fmt.Sprint(pool), "--default-memory", "1Gi", "--log-level", "info"},
		})
		ctx := ctxFor(b)
		n := envInt("BENCH_CREATES", 100)
		waitPool(b, d, pool)
		lat := make(samples, n)
		var failed atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sb := d.Client.Sandbox(fmt.Sprintf("burst-%d", i))
				<-start
				t0 := time.Now()
				res, err := sb.Exec(ctx, "true")
				lat[i] = time.Since(t0)
				if err != nil || res.ExitCode != 0 {
					failed.Add(1)
					b.Logf("burst-%d: %v", i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		lat.report(b)
		b.ReportMetric(float64(failed.Load()), "errors")
		fmt.Printf("BenchmarkConcurrentCreates summary: %d creates at once, p50 %s p99 %s, %d errors\n",
			n, lat.percentile(50).Round(time.Millisecond), lat.percentile(99).Round(time.Millisecond), failed.Load())
		absorbed := 0
		for _, l := range lat {
			if l <= 500*time.Millisecond {
				absorbed++
			}
		}
		b.ReportMetric(float64(absorbed), "within-500ms")
		fmt.Printf("BenchmarkConcurrentCreates: warm pool %d, %d of %d answered within 500 ms\n", pool, absorbed, n)
		destroyAll(b, d, "burst-%d", n)
	})
}

// BenchmarkIdleAtScale: list and `exec true` latency (one sandbox's
// default session) on a daemon with 10 idle sandboxes against one with
// BENCH_IDLE (default 100; the goal is 2000 within 20% of at 10), both
// with default flags but a sleep-after of an hour. "list" is every
// sandbox (Client.List, page after page: its answer grows with N), "page"
// the first page of pageLimit (the same answer at 10 and at N: what grows
// is the daemon's work to find it).
//
// The two daemons run side by side (their own state and run directories,
// subnets, nft tables, interface prefixes and cgroup parents) and every
// sample is taken on both, one right after the other in alternating
// order, so the ratio holds on a loaded machine, where runs minutes apart
// see different loads. What the host pays for N (the kernel's mounts,
// cgroups, interfaces, the idle agents' wake-ups) both daemons pay alike
// in the at-N phase: the first phase, both at 10 before the second grows,
// is reported as "before" lines and shows it, and how far apart two equal
// daemons measure (same-10 ratio).
//
// Idle means idle: the at-N lines are taken BENCH_SETTLE seconds (60)
// after the last create, once the big daemon's warm pool is full again:
// right after a burst of N creates the daemon refills its pool and the
// host writes the creates' files back (dirty pages expire after 30 s).
// What exec and page measure in the first second after the last create
// is printed too ("fresh"), for comparison; it is not the goal's.
// BENCH_BIG_ENV (e.g. "GOGC=700") is added to the second daemon's
// environment: with BENCH_IDLE=10 and BENCH_SETTLE=0 it compares two
// daemons of 10 sandboxes, one of them with the Go heap cycle a daemon of
// 2,000 has (a 13 MB live heap collected at 29 MB; GOGC=700 gives one of
// 10 a 28 MB goal), which tells, in a minute, whether the quiet excess
// at 2,000 is the size of the heap the calls allocate from rather than
// any work that grows with N (bench/results/scale.txt).
//
// The sleep-after of an hour keeps every sandbox running through a slow
// run: with the default 10 minutes, the first of 2,000 created 8 at a
// time start sleeping (a container stop and tear-down each, in the
// measurement) on a machine where creating them takes over 10 minutes.
func BenchmarkIdleAtScale(b *testing.B) {
	args := append(append([]string(nil), scaleArgs...), "--sleep-after", "1h")
	small := testdaemon.Start(b, testdaemon.Options{Args: args})
	big := testdaemon.Start(b, testdaemon.Options{Subnet: envString("BENCH_SUBNET", "10.250.0.0/16"), Args: args,
		Env: strings.Fields(os.Getenv("BENCH_BIG_ENV"))})
	ctx := ctxFor(b)
	total := envInt("BENCH_IDLE", 100)
	samplesN := sampleCount() * 2
	grow := func(b *testing.B, d *testdaemon.Daemon, from, to int) {
		eightAtATime(from, to, func(i int) {
			if res, err := d.Client.Sandbox(fmt.Sprintf("idle-%d", i)).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Errorf("creating idle-%d: %v", i, err)
			}
		})
	}
	grow(b, small, 0, 10)
	grow(b, big, 0, 10)
	before := idleSamples(b, small, big, samplesN, true)
	grow(b, big, 10, total)
	fresh := idleSamples(b, small, big, samplesN/4, false)
	waitPool(b, big, 2)
	time.Sleep(time.Duration(envInt("BENCH_SETTLE", 60)) * time.Second)
	at := idleSamples(b, small, big, samplesN, true)
	report := func(name string, s samples) {
		b.Run(name, func(b *testing.B) { once(b, func(b *testing.B) { s.report(b) }) })
	}
	for _, k := range []string{"list", "page", "exec"} {
		report("before/at-10/"+k, before.small[k])
		report("before/at-10-beside/"+k, before.big[k])
	}
	for _, k := range []string{"list", "page", "exec"} {
		report("at-10/"+k, at.small[k])
		report(fmt.Sprintf("at-%d/", total)+k, at.big[k])
	}
	ratio := func(at, base samples) float64 {
		return 100 * float64(at.percentile(50)) / float64(base.percentile(50))
	}
	fmt.Printf("BenchmarkIdleAtScale same-10: two daemons at 10, interleaved, p50 list %.0f%%, page %.0f%%, exec %.0f%% of each other\n",
		ratio(before.big["list"], before.small["list"]), ratio(before.big["page"], before.small["page"]),
		ratio(before.big["exec"], before.small["exec"]))
	fmt.Printf("BenchmarkIdleAtScale fresh: in the first second after the last create, p50 page %.0f%%, exec %.0f%% of at 10 (not the goal's: not idle yet)\n",
		ratio(fresh.big["page"], fresh.small["page"]), ratio(fresh.big["exec"], fresh.small["exec"]))
	fmt.Printf("BenchmarkIdleAtScale host: the at-10 daemon with %d idle beside it, p50 page %.0f%%, exec %.0f%% of before\n",
		total, ratio(at.small["page"], before.small["page"]), ratio(at.small["exec"], before.small["exec"]))
	fmt.Printf("BenchmarkIdleAtScale faults: minor page faults per exec and page, before: at 10 %.1f, beside %.1f; at 10 %.1f, at %d %.1f\n",
		before.smallFaults, before.bigFaults, at.smallFaults, total, at.bigFaults)
	fmt.Printf("BenchmarkIdleAtScale summary: %d idle sandboxes, p50 list %s (%.0f%% of at 10), page of %d %s (%.0f%% of at 10), exec %s (%.0f%% of at 10)\n",
		total, at.big["list"].percentile(50), ratio(at.big["list"], at.small["list"]), pageLimit, at.big["page"].percentile(50),
		ratio(at.big["page"], at.small["page"]), at.big["exec"].percentile(50), ratio(at.big["exec"], at.small["exec"]))
	destroyAll(b, small, "idle-%d", 10)
	destroyAll(b, big, "idle-%d", total)
}

// scaleArgs are the default flags but for what a test daemon must have of
// its own.
var scaleArgs = []string{"--warm-pool", "2", "--default-memory", "1Gi", "--log-level", "info"}

// idlePair holds one phase's samples of two daemons, by line name, and
// the minor page faults each daemon took per exec and page of the phase.
type idlePair struct {
	small, big             map[string]samples
	smallFaults, bigFaults float64
}

// idleSamples takes n exec and page samples, and n list samples if lists,
// on each of two daemons, interleaved: each sample of one daemon right
// beside the same sample of the other, which goes first alternating.
func idleSamples(b *testing.B, small, big *testdaemon.Daemon, n int, lists bool) idlePair {
	ctx := ctxFor(b)
	p := idlePair{small: map[string]samples{}, big: map[string]samples{}}
	for _, d := range []*testdaemon.Daemon{small, big} {
		for range 10 { // warm connections and the shell
			d.Client.Sandbox("idle-0").Exec(ctx, "true")
		}
	}
	each := func(i int, f func(d *testdaemon.Daemon, into map[string]samples)) {
		if i%2 == 0 {
			f(small, p.small)
			f(big, p.big)
		} else {
			f(big, p.big)
			f(small, p.small)
		}
	}
	// Exec and page first, then the full lists: a call that follows a
	// list of N pays for collecting the list's garbage (at N=200 an
	// exec's p50 +24% right after a list, nothing one call later;
	// bench/results/scale.txt), which is the list's cost.
	smallFaults, bigFaults := minorFaults(b, small), minorFaults(b, big)
	for i := range n {
		each(i, func(d *testdaemon.Daemon, into map[string]samples) {
			t0 := time.Now()
			if res, err := d.Client.Sandbox("idle-0").Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v", err)
			}
			into["exec"] = append(into["exec"], time.Since(t0))
			t0 = time.Now()
			pg, err := d.Client.ListPage(ctx, client.ListOptions{Limit: pageLimit})
			into["page"] = append(into["page"], time.Since(t0))
			if err != nil || len(pg.Sandboxes) != pageLimit {
				b.Fatalf("first page: %v", err)
			}
		})
	}
	p.smallFaults = float64(minorFaults(b, small)-smallFaults) / float64(n)
	p.bigFaults = float64(minorFaults(b, big)-bigFaults) / float64(n)
	for i := range n {
		if !lists {
			break
		}
		each(i, func(d *testdaemon.Daemon, into map[string]samples) {
			t0 := time.Now()
			_, err := d.Client.List(ctx)
			into["list"] = append(into["list"], time.Since(t0))
			if err != nil {
				b.Fatalf("list: %v", err)
			}
		})
	}
	return p
}

// minorFaults is the count of minor page faults of d's process so far
// (/proc/PID/stat's minflt). In the PVM guest the results were taken on,
// a fault costs 1-2 us, and over 40 us when the host must back the page
// anew (bench/results/scale.txt): a daemon whose calls allocate memory
// its Go heap gave back to the kernel pays that per fresh 4 KiB page.
func minorFaults(b *testing.B, d *testdaemon.Daemon) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.PID()))
	if err != nil {
		b.Fatalf("reading the daemon's stat: %v", err)
	}
	// The fields after the command's closing parenthesis (the last one:
	// the command may hold any) start with the state (field 3); minflt
	// is field 10.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(fields) < 8 {
		b.Fatalf("short /proc/PID/stat: %q", data)
	}
	n, err := strconv.ParseInt(fields[7], 10, 64)
	if err != nil {
		b.Fatalf("minflt: %v", err)
	}
	return n
}

// pageLimit is the page size of BenchmarkIdleAtScale's "page": every
// sandbox at 10, the first 10 of N at N.
const pageLimit = 10

// destroyAll destroys the sandboxes format % 0..n-1, 8 at a time.
func destroyAll(b *testing.B, d *testdaemon.Daemon, format string, n int) {
	ctx := ctxFor(b)
	eightAtATime(0, n, func(i int) { d.Client.Sandbox(fmt.Sprintf(format, i)).Destroy(ctx) })
}

// eightAtATime calls f for from..to-1 on 8 goroutines and waits for all.
func eightAtATime(from, to int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// waitPool waits until the daemon's warm pool holds n ready sandboxes.
func waitPool(b *testing.B, d *testdaemon.Daemon, n int) {
	want := fmt.Sprintf(`sandboxd_warm_pool{state="ready"} %d`, n)
	for deadline := time.Now().Add(2*time.Minute + time.Duration(n)*time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest("GET", d.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+d.Token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
	}
	b.Fatalf("the warm pool did not fill (%s)", want)
}
