package bench

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"
)

// samples is a set of measured durations.
type samples []time.Duration

// percentile returns the p-th percentile (0-100), nearest rank.
func (s samples) percentile(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := append(samples(nil), s...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	idx := int(float64(len(sorted))*p/100+0.5) - 1
	if idx < 0 {
		idx = 0
	}
	if idx >= len(sorted) {
		idx = len(sorted) - 1
	}
	return sorted[idx]
}

// report publishes p50, p95 and p99 in milliseconds (and the count) as
// benchmark metrics, and logs a one-line summary.
func (s samples) report(b *testing.B) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(s.percentile(50)), "p50-ms")
	b.ReportMetric(ms(s.percentile(95)), "p95-ms")
	b.ReportMetric(ms(s.percentile(99)), "p99-ms")
	b.ReportMetric(float64(len(s)), "samples")
	b.ReportMetric(0, "ns/op") // the loop count is not the measurement
	b.Logf("n=%d p50=%.2fms p95=%.2fms p99=%.2fms", len(s), ms(s.percentile(50)), ms(s.percentile(95)), ms(s.percentile(99)))
}

// sampleCount is how many samples each benchmark takes: BENCH_N, or 100.
func sampleCount() int {
	n := 100
	if v := os.Getenv("BENCH_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	return n
}

// measure runs f n times and returns the durations.
func measure(b *testing.B, n int, f func(i int)) samples {
	b.Helper()
	out := make(samples, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		f(i)
		out = append(out, time.Since(start))
	}
	return out
}

// once makes a benchmark body run exactly once whatever b.N is: the
// benchmark takes its own samples.
func once(b *testing.B, f func(b *testing.B)) {
	b.Helper()
	for i := 0; i < b.N; i++ {
		if i == 0 {
			f(b)
		}
	}
}

func TestPercentile(t *testing.T) {
	var s samples
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 95: 95 * time.Millisecond, 99: 99 * time.Millisecond} {
		if got := s.percentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if !strings.Contains(fmt.Sprint(samples{}.percentile(50)), "0") {
		t.Error("empty")
	}
}

// inTurn is the order in which a side-by-side benchmark samples its
// sides in round i: order (indices of the sides) as given in even rounds,
// with the two it compares, x and y, trading places in odd ones. So each
// of the two follows the same others as often, and never itself: in a
// fixed order one always follows what ends a round (another runtime's
// sample, a raw run) and the other always follows the first, and the
// same build read differently by its place (bench/results/gvisor.txt, the
// thirteenth session's second gvexec section). Two sides with nothing
// between rounds need no turns: each already always follows the other.
func inTurn(i int, order []int, x, y int) []int {
	out := append([]int(nil), order...)
	if i%2 == 1 {
		for k, v := range out {
			switch v {
			case x:
				out[k] = y
			case y:
				out[k] = x
			}
		}
	}
	return out
}

// upTo is 0, 1, ..., n-1: sides in the order they are listed.
func upTo(n int) []int {
	out := make([]int, n)
	for k := range out {
		out[k] = k
	}
	return out
}

func TestInTurn(t *testing.T) {
	order := []int{0, 2, 1}
	if got := fmt.Sprint(inTurn(0, order, 0, 2), inTurn(1, order, 0, 2), inTurn(2, order, 0, 2), inTurn(3, []int{3, 0, 1, 2}, 1, 2)); got != "[0 2 1] [2 0 1] [0 2 1] [3 0 2 1]" {
		t.Errorf("inTurn = %s", got)
	}
	if fmt.Sprint(order) != "[0 2 1]" {
		t.Errorf("inTurn changed its argument: %v", order)
	}
}
