package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/store"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkColdStartWarmPoolFloor: what a warm pool take cannot go below
// on this machine, measured beside the take itself, sample by sample on
// one daemon with a pool of 1 (as BenchmarkColdStartWarmPool):
//
//	take        a new ID's first `exec true`, answered from the pool (the product)
//	exec        `exec true` on a sandbox that has run many (a warm exec: the call alone)
//	exec+write  the same, with one registry row's write started at the same moment
//	            (store.Insert of the row a take writes, into a registry of the same
//	            kind on the same filesystem), until both ended
//	exec+ahead  the same, with the row written ahead instead (store.InsertAhead: the
//	            journal line a take for a call waits for), until both ended; the
//	            row's SQLite insert (Apply) follows, outside the measurement, as a
//	            take's follows its answer
//	write       that write alone
//
// Each sample first waits for the pool to refill (a container start, which
// leaves the caches as cold as a take finds them), then runs take, exec,
// exec+write and exec+ahead in an order that rotates from one sample to
// the next, then write. A take also names
// the sandbox before its call (hostname, /etc/hostname, /etc/hosts: the
// name step of its debug line), which the command must see; so a take
// that inserts its row beside its call cannot answer before exec+write
// plus name, reported as floor, and one that writes it ahead (as takes
// for a call do since the thirteenth session) not before exec+ahead plus
// name, reported as floor-ahead. take-first-p50-ms is the takes that came
// first after the refill (one sample in four), take-later-p50-ms those
// that followed other members' calls by a few ms: whether a take on a host
// that was idle just before costs more than one that follows activity.
func BenchmarkColdStartWarmPoolFloor(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--warm-pool", "1", "--default-memory", "128Mi"}})
		ctx := ctxFor(b)
		reg, err := store.Open(filepath.Join(b.TempDir(), "registry.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer reg.Close()
		warm := d.Client.Sandbox("floor-warm")
		for i := 0; i < 20; i++ { // warm up connections and the shell
			mustExec(b, ctx, warm)
		}
		var take, exec, execWrite, execAhead, write samples
		var takeFirst, takeLater samples // right after the refill, or after other members
		for i := 0; i < sampleCount(); i++ {
			waitPoolReady(b, d)
			pooled := func() {
				start := time.Now()
				mustExec(b, ctx, d.Client.Sandbox(fmt.Sprintf("floor-%d", i)))
				t := time.Since(start)
				take = append(take, t)
				if i%4 == 0 { // fs[0]: the first member of this sample
					takeFirst = append(takeFirst, t)
				} else {
					takeLater = append(takeLater, t)
				}
			}
			beside := func() {
				start := time.Now()
				var wg sync.WaitGroup
				wg.Go(func() { insertRow(b, ctx, reg, fmt.Sprintf("beside-%d", i)) })
				mustExec(b, ctx, warm)
				wg.Wait()
				execWrite = append(execWrite, time.Since(start))
			}
			ahead := func() {
				start := time.Now()
				var wg sync.WaitGroup
				var row store.Pending
				wg.Go(func() { row = insertRowAhead(b, ctx, reg, fmt.Sprintf("ahead-%d", i)) })
				mustExec(b, ctx, warm)
				wg.Wait()
				execAhead = append(execAhead, time.Since(start))
				if err := row.Apply(ctx); err != nil {
					b.Fatal(err)
				}
			}
			alone := func() {
				start := time.Now()
				mustExec(b, ctx, warm)
				exec = append(exec, time.Since(start))
			}
			// Each goes first (right after the refill) as often as the others.
			fs := []func(){pooled, beside, ahead, alone}
			for k := range fs {
				fs[(i+k)%len(fs)]()
			}
			start := time.Now()
			insertRow(b, ctx, reg, fmt.Sprintf("alone-%d", i))
			write = append(write, time.Since(start))
		}
		name := stepP50(d.Logs(), "sandbox adopted", "name")
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(take.percentile(50)), "take-p50-ms")
		b.ReportMetric(ms(take.percentile(99)), "take-p99-ms")
		b.ReportMetric(ms(takeFirst.percentile(50)), "take-first-p50-ms")
		b.ReportMetric(ms(takeLater.percentile(50)), "take-later-p50-ms")
		b.ReportMetric(ms(exec.percentile(50)), "exec-p50-ms")
		b.ReportMetric(ms(execWrite.percentile(50)), "exec+write-p50-ms")
		b.ReportMetric(ms(write.percentile(50)), "write-p50-ms")
		b.ReportMetric(ms(name), "name-p50-ms")
		b.ReportMetric(ms(execWrite.percentile(50)+name), "floor-p50-ms")
		b.ReportMetric(ms(execAhead.percentile(50)), "exec+ahead-p50-ms")
		b.ReportMetric(ms(execAhead.percentile(50)+name), "floor-ahead-p50-ms")
		b.ReportMetric(float64(len(take)), "samples")
		b.ReportMetric(0, "ns/op")
		b.Logf("take steps p50: %s", logSteps(d.Logs(), "sandbox adopted"))
		for i := 0; i < sampleCount(); i++ {
			d.Client.Sandbox(fmt.Sprintf("floor-%d", i)).Destroy(ctx)
		}
	})
}

func mustExec(b *testing.B, ctx context.Context, sb *client.Sandbox) {
	if res, err := sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
		b.Fatalf("exec: %v", err)
	}
}

// insertRow writes the registry row a warm pool take writes.
func insertRow(b *testing.B, ctx context.Context, reg *store.Store, id string) {
	if err := reg.Insert(ctx, takeRow(id)); err != nil {
		b.Fatal(err)
	}
}

// insertRowAhead writes that row ahead, as a take for a call does.
func insertRowAhead(b *testing.B, ctx context.Context, reg *store.Store, id string) store.Pending {
	row, err := reg.InsertAhead(ctx, takeRow(id))
	if err != nil {
		b.Fatal(err)
	}
	return row
}

// takeRow is the registry row a warm pool take writes, for id.
func takeRow(id string) store.Sandbox {
	now := time.Now().UTC()
	return store.Sandbox{
		ID: id, Key: "k" + strings.ReplaceAll(id, "-", ""), Status: "running", Image: "host", Runtime: "crun",
		Config:  []byte(`{"image":"host","limits":{"memoryBytes":134217728,"milliCpu":1000,"pids":1024},"network":{"mode":"none"},"sleepAfter":600000000000,"runtime":"crun"}`),
		NetSlot: -1, CreatedAt: now, LastUsedAt: now, StatusChangedAt: now, HostUIDBase: 1 << 20,
	}
}

// stepP50 is the median of one step of a daemon's debug lines with
// message msg (steps="a=1.2ms b=...").
func stepP50(log, msg, step string) time.Duration {
	var s samples
	for _, line := range strings.Split(log, "\n") {
		_, rest, ok := strings.Cut(line, `msg="`+msg+`"`)
		if !ok {
			continue
		}
		_, steps, _ := strings.Cut(rest, `steps="`)
		steps, _, _ = strings.Cut(steps, `"`)
		for _, kv := range strings.Fields(steps) {
			if k, v, _ := strings.Cut(kv, "="); k == step {
				if d, err := time.ParseDuration(v); err == nil {
					s = append(s, d)
				}
			}
		}
	}
	if len(s) == 0 {
		return 0
	}
	return s.percentile(50)
}
