package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// fileBenchSize is the file moved by BenchmarkFileTransfer.
const fileBenchSize = 1 << 30

// fileSamples is how many times each transfer is measured: BENCH_FILE_N,
// or 3 (each sample moves 1 GiB).
func fileSamples() int {
	n := 3
	if v := os.Getenv("BENCH_FILE_N"); v != "" {
		fmt.Sscan(v, &n)
	}
	return max(n, 1)
}

// blockReader produces n bytes of incompressible data from one random
// block, without holding them.
type blockReader struct {
	block []byte
	left  int64
}

func newBlockReader(n int64) *blockReader {
	r := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return &blockReader{block: b, left: n}
}

func (r *blockReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], r.block)
	r.left -= int64(n)
	return n, nil
}

// BenchmarkFileTransfer moves a 1 GiB file through the API (Upload: PUT
// /files/raw; Download: GET /files/raw) and compares it with cat of the
// same file inside the sandbox (cat FILE > /dev/null, timed inside, so
// exec's own cost is not counted). The sandbox has memory enough to keep
// the file in the page cache, so every path reads the same cached pages
// and the comparison is of the data paths, not of the disk. Reported:
// MB/s of each at the median, and the API's share of cat's speed.
func BenchmarkFileTransfer(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{})
		sb := d.Client.Sandbox("bench-files", client.WithLimits(api.Limits{MemoryBytes: 3 << 30}))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		const path = "/workspace/bench.bin"
		n := fileSamples()
		up := measure(b, n, func(int) {
			res, err := sb.Upload(ctx, path, newBlockReader(fileBenchSize))
			if err != nil || res.BytesWritten != fileBenchSize {
				b.Fatalf("upload: %+v, %v", res, err)
			}
		})
		down := measure(b, n, func(int) {
			got, err := sb.Download(ctx, path, io.Discard)
			if err != nil || got != fileBenchSize {
				b.Fatalf("download: %d, %v", got, err)
			}
		})
		var cat samples
		for range n {
			res, err := sb.Exec(ctx, "s=$(date +%s%N); cat "+path+" > /dev/null; e=$(date +%s%N); echo $((e-s))")
			if err != nil || res.ExitCode != 0 {
				b.Fatalf("cat: %v %+v", err, res)
			}
			ns, err := strconv.ParseInt(strings.TrimSpace(res.Stdout), 10, 64)
			if err != nil {
				b.Fatalf("cat timing %q", res.Stdout)
			}
			cat = append(cat, time.Duration(ns))
		}
		sb.DeleteFile(ctx, path)
		mbps := func(s samples) float64 { return fileBenchSize / 1e6 / s.percentile(50).Seconds() }
		b.ReportMetric(mbps(up), "upload-MB/s")
		b.ReportMetric(mbps(down), "download-MB/s")
		b.ReportMetric(mbps(cat), "cat-MB/s")
		b.ReportMetric(mbps(up)/mbps(cat), "upload/cat")
		b.ReportMetric(mbps(down)/mbps(cat), "download/cat")
		b.ReportMetric(float64(n), "samples")
		b.ReportMetric(0, "ns/op")
		for name, s := range map[string]samples{"upload": up, "download": down, "cat": cat} {
			b.Logf("%s: n=%d p50=%.0f MB/s (p95 time %v, p99 time %v)", name, len(s), mbps(s), s.percentile(95), s.percentile(99))
		}
	})
}
