package bench

import (
	"fmt"
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
//     beside a plain cold start of the same daemon, alternating (BENCH_N);
//   - forks' disk: SNAP_FORKS forks (default 100) created and stopped, the
//     bytes of the snapshot store and of all the forks' directories.
func BenchmarkSnapshotAndFork(b *testing.B) {
	testdaemon.SkipUnlessRoot(b)
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-network", "none"}})
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
		for i := 0; i < n; i++ {
			start := time.Now()
			if res, err := d.Client.Sandbox(fmt.Sprintf("fork-%d", i), client.WithFromSnapshot("s0")).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("fork exec: %v %+v", err, res)
			}
			fork = append(fork, time.Since(start))
			start = time.Now()
			if res, err := d.Client.Sandbox(fmt.Sprintf("cold-%d", i)).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("cold exec: %v %+v", err, res)
			}
			cold = append(cold, time.Since(start))
			d.Client.Sandbox(fmt.Sprintf("fork-%d", i)).Destroy(ctx)
			d.Client.Sandbox(fmt.Sprintf("cold-%d", i)).Destroy(ctx)
		}
		b.Run("fork-to-first-exec", func(b *testing.B) { once(b, func(b *testing.B) { fork.report(b) }) })
		b.Run("cold-start-same-daemon", func(b *testing.B) { once(b, func(b *testing.B) { cold.report(b) }) })

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
	})
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
