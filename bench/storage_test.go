package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/bucket"
	"github.com/sandboxd/sandboxd/internal/s3test"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkBucketMount, against versitygw on loopback (POSIX backend):
//
//   - mount-to-first-ls: POST .../mounts of a bucket into a running
//     sandbox until `ls` of it succeeds in the sandbox (BENCH_N samples,
//     at most 8: a sandbox's limit of bucket mounts);
//   - sequential write and read of BUCKET_MIB MiB (default 256) with dd
//     through the mount in the sandbox, beside the same s3fs mounted on
//     the host without a sandbox (page cache dropped before each read).
func BenchmarkBucketMount(b *testing.B) {
	testdaemon.SkipUnlessRoot(b)
	once(b, func(b *testing.B) {
		srv := s3test.Start(b)
		srv.Bucket(b, "bench")
		d := testdaemon.Start(b, testdaemon.Options{})
		ctx := ctxFor(b)
		sb := d.Client.Sandbox("bench-mount")
		if _, err := sb.Exec(ctx, "true"); err != nil {
			b.Fatal(err)
		}
		opts := client.MountOptions{Endpoint: srv.Endpoint, Credentials: &api.BucketCredentials{AccessKeyID: srv.Creds.AccessKeyID, SecretAccessKey: srv.Creds.SecretAccessKey}}
		n := min(sampleCount(), 8)
		mount := measure(b, n, func(i int) {
			p := fmt.Sprintf("/m%d", i)
			if _, err := sb.MountBucket(ctx, "bench", p, opts); err != nil {
				b.Fatal(err)
			}
			if res, err := sb.Exec(ctx, "ls "+p); err != nil || res.ExitCode != 0 {
				b.Fatalf("ls: %v %+v", err, res)
			}
		})
		for i := 0; i < n; i++ {
			sb.UnmountBucket(ctx, fmt.Sprintf("/m%d", i))
		}
		b.Run("mount-to-first-ls", func(b *testing.B) { once(b, func(b *testing.B) { mount.report(b) }) })

		mib := envInt("BUCKET_MIB", 256)
		if _, err := sb.MountBucket(ctx, "bench", "/data", opts); err != nil {
			b.Fatal(err)
		}
		host := filepath.Join(b.TempDir(), "host")
		if err := bucket.Mount(ctx, bucket.Source{Bucket: "bench", Endpoint: srv.Endpoint}, host, bucket.MountOptions{Creds: srv.Creds}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { bucket.Unmount(host) })
		inSandbox := func(cmd string) time.Duration {
			start := time.Now()
			if res, err := sb.Exec(ctx, cmd, client.WithTimeout(10*time.Minute)); err != nil || res.ExitCode != 0 {
				b.Fatalf("%s: %v %+v", cmd, err, res)
			}
			return time.Since(start)
		}
		onHost := func(cmd string) time.Duration {
			start := time.Now()
			if out, err := exec.Command("sh", "-c", cmd).CombinedOutput(); err != nil {
				b.Fatalf("%s: %v %s", cmd, err, out)
			}
			return time.Since(start)
		}
		dropCaches := func() { os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) }
		write := func(dir, name string) string {
			return fmt.Sprintf("dd if=/dev/zero of=%s/%s bs=1M count=%d conv=fsync status=none", dir, name, mib)
		}
		read := func(dir, name string) string {
			return fmt.Sprintf("dd if=%s/%s of=/dev/null bs=1M status=none", dir, name)
		}
		rate := func(t time.Duration) float64 { return float64(mib) / t.Seconds() }
		// Alternate sandbox and host, twice each, and keep the best of
		// each: the machine is shared, so the best run is the least
		// disturbed one.
		var sw, hw, sr, hr time.Duration
		best := func(cur *time.Duration, t time.Duration) {
			if *cur == 0 || t < *cur {
				*cur = t
			}
		}
		for i := 0; i < 2; i++ {
			best(&sw, inSandbox(write("/data", "s.bin")))
			best(&hw, onHost(write(host, "h.bin")))
			dropCaches()
			best(&sr, inSandbox(read("/data", "h.bin")))
			dropCaches()
			best(&hr, onHost(read(host, "s.bin")))
		}
		b.Run("seq-write", func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.ReportMetric(rate(sw), "sandbox-MiB/s")
				b.ReportMetric(rate(hw), "host-MiB/s")
				b.ReportMetric(100*rate(sw)/rate(hw), "pct-of-host")
			})
		})
		b.Run("seq-read", func(b *testing.B) {
			once(b, func(b *testing.B) {
				b.ReportMetric(rate(sr), "sandbox-MiB/s")
				b.ReportMetric(rate(hr), "host-MiB/s")
				b.ReportMetric(100*rate(sr)/rate(hr), "pct-of-host")
			})
		})
	})
}
