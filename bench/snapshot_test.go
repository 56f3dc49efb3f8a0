package bench

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkSnapshotAndFork: a sandbox (crun, network none) writes
// SNAP_MIB MiB (default 1024) in 1 MiB files; then
//
//   - snapshot: `sandbox snapshot create` of it, whole call and time
//     frozen (SNAP_TAKES samples, default 3; later ones share the layer);
//   - fork: a new sandbox from the snapshot to its first `exec true`,
//     beside a plain start of a new ID of the same daemon, alternating
//     (BENCH_N). The daemon keeps a warm pool of one (--warm-pool 1), and
//     so a warm fork of the snapshot once it was forked (the first fork,
//     not measured, is a cold start); each sample waits outside the
//     measurement for both to be refilled;
//   - forks' disk: SNAP_FORKS forks (default 100) created and stopped, the
//     bytes of the snapshot store and of all the forks' directories;
//   - memory (gVisor, when bin/runsc exists): a daemon whose sandboxes run
//     on gVisor; a sandbox with a Python process holding SNAP_MEM_MIB MiB
//     (default 200) and a code context's variable is snapshotted with its
//     memory (call and time frozen, SNAP_TAKES samples), and forks restore
//     it to their first `exec true` (the parent's process checked running
//     in the first), beside a plain start of the same daemon (BENCH_N).
func BenchmarkSnapshotAndFork(b *testing.B) {
	testdaemon.SkipUnlessRoot(b)
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-network", "none", "--warm-pool", "1"}})
		ctx := ctxFor(b)
		mib := envInt("SNAP_MIB", 1024)
		parent := d.Client.Sandbox("snap-parent")
		cmd := fmt.Sprintf("mkdir -p /workspace/data && for i in $(seq %d); do head -c 1048576 /dev/urandom > /workspace/data/f$i; done && sync", mib)
		if res, err := parent.Exec(ctx, cmd, client.WithTimeout(20*time.Minute)); err != nil || res.ExitCode != 0 {
			b.Fatalf("writing %d MiB: %v %+v", mib, err, res)
		}

		var whole, frozen samples
		var notes []string
		for i := 0; i < envInt("SNAP_TAKES", 3); i++ {
			start := time.Now()
			snap, err := parent.Snapshot(ctx, fmt.Sprintf("s%d", i), client.SnapshotOptions{})
			if err != nil {
				b.Fatal(err)
			}
			whole = append(whole, time.Since(start))
			frozen = append(frozen, time.Duration(snap.FrozenMs*float64(time.Millisecond)))
			notes = append(notes, fmt.Sprintf("snapshot %d: %d MiB in %d files, call %v, frozen %.0f ms", i, snap.Size>>20, snap.Files, whole[i].Round(time.Millisecond), snap.FrozenMs))
		}
		// A parent benchmark's own logs and metrics are not printed
		// beside its sub-benchmarks': each result is a sub-benchmark.
		b.Run("snapshot-call", func(b *testing.B) {
			once(b, func(b *testing.B) {
				for _, n := range notes {
					b.Log(n)
				}
				whole.report(b)
			})
		})
		b.Run("snapshot-frozen", func(b *testing.B) { once(b, func(b *testing.B) { frozen.report(b) }) })

		n := sampleCount()
		var fork, cold samples
		// The first fork of the snapshot is a cold start; it makes the
		// daemon keep a warm fork for the next.
		if res, err := d.Client.Sandbox("fork-first", client.WithFromSnapshot("s0")).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
			b.Fatalf("first fork: %v %+v", err, res)
		}
		for i := 0; i < n; i++ {
			waitGauge(b, d, `sandboxd_fork_pool{state="ready"} 1`)
			waitGauge(b, d, `sandboxd_warm_pool{state="ready"} 1`)
			start := time.Now()
			if res, err := d.Client.Sandbox(fmt.Sprintf("fork-%d", i), client.WithFromSnapshot("s0")).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("fork exec: %v %+v", err, res)
			}
			fork = append(fork, time.Since(start))
			waitGauge(b, d, `sandboxd_warm_pool{state="ready"} 1`)
			start = time.Now()
			if res, err := d.Client.Sandbox(fmt.Sprintf("cold-%d", i)).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("cold exec: %v %+v", err, res)
			}
			cold = append(cold, time.Since(start))
			d.Client.Sandbox(fmt.Sprintf("fork-%d", i)).Destroy(ctx)
			d.Client.Sandbox(fmt.Sprintf("cold-%d", i)).Destroy(ctx)
		}
		d.Client.Sandbox("fork-first").Destroy(ctx)
		b.Run("fork-to-first-exec", func(b *testing.B) { once(b, func(b *testing.B) { fork.report(b) }) })
		b.Run("cold-start-same-daemon", func(b *testing.B) { once(b, func(b *testing.B) { cold.report(b) }) })
		b.Run("fork-minus-cold-start", func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.ReportMetric(float64(fork.percentile(50)-cold.percentile(50))/float64(time.Millisecond), "p50-delta-ms")
				b.ReportMetric(0, "ns/op")
			})
		})

		forks := envInt("SNAP_FORKS", 100)
		var forkDirs []string
		for i := 0; i < forks; i++ {
			sb := d.Client.Sandbox(fmt.Sprintf("many-%d", i), client.WithFromSnapshot("s0"), client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone}))
			if res, err := sb.Exec(ctx, "echo mine > /workspace/mine && test -s /workspace/data/f1"); err != nil || res.ExitCode != 0 {
				b.Fatalf("fork %d: %v %+v", i, err, res)
			}
			if _, err := sb.Stop(ctx); err != nil {
				b.Fatal(err)
			}
		}
		for _, key := range d.Keys() {
			forkDirs = append(forkDirs, filepath.Join(d.StateDir, "sandboxes", key))
		}
		store := du(b, filepath.Join(d.StateDir, "snapshots"))
		all := du(b, forkDirs...)
		b.Run("forks-disk", func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.Logf("%d forks of a %d MiB snapshot (%d snapshots of it, one shared layer): snapshot store %d MiB; all %d sandboxes' directories (the parent's %d MiB included) %d MiB",
					forks, mib, len(whole), store>>20, len(forkDirs), mib, all>>20)
				b.ReportMetric(float64(store>>20), "store-MiB")
				b.ReportMetric(float64(all>>20), "sandboxes-MiB")
				b.ReportMetric(float64(forks), "forks")
				b.ReportMetric(0, "ns/op")
			})
		})
		if _, err := os.Stat(filepath.Join(testdaemon.BinDir(b), "runsc")); err == nil {
			memorySnapshotAndFork(b)
		}
	})
}

// memorySnapshotAndFork measures memory snapshots and forks on a daemon
// whose sandboxes run on gVisor (see BenchmarkSnapshotAndFork).
func memorySnapshotAndFork(b *testing.B) {
	d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-network", "none", "--warm-pool", "1", "--default-runtime", "gvisor"}})
	ctx := ctxFor(b)
	mib := envInt("SNAP_MEM_MIB", 200)
	parent := d.Client.Sandbox("mem-parent", client.WithLimits(api.Limits{MemoryBytes: int64(mib+512) << 20}))
	hold := fmt.Sprintf("nohup python3 -c 'import time; b = bytearray(%d << 20); b[::4096] = b\"x\" * len(b[::4096]); time.sleep(1e9)' >/dev/null 2>&1 & echo $! > /tmp/holder.pid", mib)
	if res, err := parent.Exec(ctx, hold); err != nil || res.ExitCode != 0 {
		b.Fatalf("starting the holder: %v %+v", err, res)
	}
	if res, err := parent.RunCode(ctx, "kept = 41", client.RunCodeOptions{}); err != nil || res.Error != nil {
		b.Fatalf("run-code: %v %+v", err, res)
	}
	time.Sleep(2 * time.Second) // the holder has touched its pages
	var whole, frozen samples
	var notes []string
	for i := 0; i < envInt("SNAP_TAKES", 3); i++ {
		start := time.Now()
		snap, err := parent.Snapshot(ctx, fmt.Sprintf("m%d", i), client.SnapshotOptions{Memory: true})
		if err != nil {
			b.Fatal(err)
		}
		whole = append(whole, time.Since(start))
		frozen = append(frozen, time.Duration(snap.FrozenMs*float64(time.Millisecond)))
		notes = append(notes, fmt.Sprintf("memory snapshot %d: call %v, frozen %.0f ms", i, whole[i].Round(time.Millisecond), snap.FrozenMs))
	}
	mem := du(b, filepath.Join(d.StateDir, "snapshots", "memory", "m0"))
	b.Run("memory-snapshot-call", func(b *testing.B) {
		once(b, func(b *testing.B) {
			for _, n := range notes {
				b.Log(n)
			}
			b.Logf("a Python process holding %d MiB; the checkpoint takes %d MiB on disk", mib, mem>>20)
			whole.report(b)
		})
	})
	b.Run("memory-snapshot-frozen", func(b *testing.B) { once(b, func(b *testing.B) { frozen.report(b) }) })
	n := sampleCount()
	var fork, plain samples
	for i := 0; i < n; i++ {
		start := time.Now()
		f := d.Client.Sandbox(fmt.Sprintf("mem-fork-%d", i), client.WithFromSnapshot("m0"))
		if res, err := f.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
			b.Fatalf("memory fork exec: %v %+v", err, res)
		}
		fork = append(fork, time.Since(start))
		if i == 0 {
			if res, err := f.Exec(ctx, "kill -0 $(cat /tmp/holder.pid)"); err != nil || res.ExitCode != 0 {
				b.Fatalf("the parent's process is not running in the fork: %v %+v", err, res)
			}
			if res, err := f.RunCode(ctx, "kept + 1", client.RunCodeOptions{}); err != nil || res.Error != nil || len(res.Results) == 0 || res.Results[0].Text != "42" {
				b.Fatalf("the parent's Python variable in the fork: %v %+v", err, res)
			}
		}
		f.Destroy(ctx)
		waitGauge(b, d, `sandboxd_warm_pool{state="ready"} 1`)
		start = time.Now()
		if res, err := d.Client.Sandbox(fmt.Sprintf("mem-plain-%d", i)).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
			b.Fatalf("plain exec: %v %+v", err, res)
		}
		plain = append(plain, time.Since(start))
		d.Client.Sandbox(fmt.Sprintf("mem-plain-%d", i)).Destroy(ctx)
	}
	b.Run("memory-fork-to-first-exec", func(b *testing.B) { once(b, func(b *testing.B) { fork.report(b) }) })
	b.Run("gvisor-start-same-daemon", func(b *testing.B) { once(b, func(b *testing.B) { plain.report(b) }) })
}

// waitGauge waits (outside any measurement) until the daemon's metrics
// hold line.
func waitGauge(b *testing.B, d *testdaemon.Daemon, line string) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", d.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+d.Token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), line) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("the daemon's metrics did not show %s within 60s", line)
}

// du is the disk use in bytes of paths (du -sbc: hard links once).
func du(b *testing.B, paths ...string) int64 {
	out, err := exec.Command("du", append([]string{"-sc", "--block-size=1"}, paths...)...).Output()
	if err != nil {
		b.Fatalf("du: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	n, _ := strconv.ParseInt(strings.Fields(lines[len(lines)-1])[0], 10, 64)
	return n
}
