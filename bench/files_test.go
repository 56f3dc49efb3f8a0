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

// Len tells Upload the length ahead, as a file would.
func (r *blockReader) Len() int { return int(r.left) }

func (r *blockReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], r.block)
	r.left -= int64(n)
	return n, nil
}

// cpuTime is the user and system CPU time a process has used.
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ = 100
}

// agentOf finds the host PID of the agent whose root holds the file
// marker.
func agentOf(b *testing.B, marker string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if !strings.HasPrefix(string(cmd), "/.sandboxd/agent\x00") {
			continue
		}
		if _, err := os.Stat("/proc/" + e.Name() + "/root" + marker); err == nil {
			return pid
		}
	}
	b.Fatal("the sandbox's agent was not found")
	return 0
}

// BenchmarkFileTransfer moves a 1 GiB file through the API (Upload: PUT
// /files/raw; Download: GET /files/raw) and compares it with cat of the
// same file inside the sandbox, timed inside so exec's own cost is not
// counted: cat FILE > /dev/null (the baseline the issue names; the bytes
// go nowhere, so it is the page cache's copy rate), cat FILE | cat (the
// bytes reach another process, as a download's do) and cat FILE | cat >
// COPY
// (the bytes arrive through a pipe and are written to a file, as an
// upload's arrive through a socket and are written). The sandbox has
// memory enough to keep the file in the page cache, so every path reads
// the same cached pages. Reported: MB/s of each at the median, the API's
// share of each baseline, and the CPU the daemon and the agent spent per
// GiB (which, unlike MB/s, does not depend on what else the machine is
// doing).
func BenchmarkFileTransfer(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{})
		sb := d.Client.Sandbox("bench-files", client.WithLimits(api.Limits{MemoryBytes: 3 << 30}))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		const path = "/workspace/bench.bin"
		const marker = "/workspace/.bench-marker"
		if _, err := sb.WriteFile(ctx, marker, []byte("x")); err != nil {
			b.Fatal(err)
		}
		agent, daemon := agentOf(b, marker), d.PID()
		n := fileSamples()
		cpu := func() (time.Duration, time.Duration) { return cpuTime(daemon), cpuTime(agent) }
		d0, a0 := cpu()
		up := measure(b, n, func(int) {
			res, err := sb.Upload(ctx, path, newBlockReader(fileBenchSize))
			if err != nil || res.BytesWritten != fileBenchSize {
				b.Fatalf("upload: %+v, %v", res, err)
			}
		})
		d1, a1 := cpu()
		down := measure(b, n, func(int) {
			got, err := sb.Download(ctx, path, io.Discard)
			if err != nil || got != fileBenchSize {
				b.Fatalf("download: %d, %v", got, err)
			}
		})
		d2, a2 := cpu()
		perGiB := func(d time.Duration) float64 { return float64(d.Milliseconds()) / float64(n) }
		b.ReportMetric(perGiB(d1-d0), "upload-daemon-cpu-ms/GiB")
		b.ReportMetric(perGiB(a1-a0), "upload-agent-cpu-ms/GiB")
		b.ReportMetric(perGiB(d2-d1), "download-daemon-cpu-ms/GiB")
		b.ReportMetric(perGiB(a2-a1), "download-agent-cpu-ms/GiB")
		// The same file, inside the sandbox, timed inside: read by cat
		// (the baseline), read and handed to another process
		// through a pipe, and handed through a pipe to a cat that writes
		// it to a new file with write(2) (a lone cat > COPY would use
		// copy_file_range, which no byte stream can).
		inSandbox := func(cmd string) samples {
			var out samples
			for range n {
				res, err := sb.Exec(ctx, "s=$(date +%s%N); "+cmd+"; e=$(date +%s%N); echo $((e-s))")
				if err != nil || res.ExitCode != 0 {
					b.Fatalf("%s: %v %+v", cmd, err, res)
				}
				ns, err := strconv.ParseInt(strings.TrimSpace(res.Stdout), 10, 64)
				if err != nil {
					b.Fatalf("%s: timing %q", cmd, res.Stdout)
				}
				out = append(out, time.Duration(ns))
			}
			return out
		}
		cat := inSandbox("cat " + path + " > /dev/null")
		catPipe := inSandbox("cat " + path + " | cat > /dev/null")
		catCopy := inSandbox("cat " + path + " | cat > " + path + ".copy")
		sb.DeleteFile(ctx, path+".copy")
		sb.DeleteFile(ctx, path)
		mbps := func(s samples) float64 { return fileBenchSize / 1e6 / s.percentile(50).Seconds() }
		b.ReportMetric(mbps(up), "upload-MB/s")
		b.ReportMetric(mbps(down), "download-MB/s")
		b.ReportMetric(mbps(cat), "cat-MB/s")
		b.ReportMetric(mbps(catPipe), "cat-pipe-MB/s")
		b.ReportMetric(mbps(catCopy), "cat-copy-MB/s")
		b.ReportMetric(mbps(up)/mbps(cat), "upload/cat")
		b.ReportMetric(mbps(down)/mbps(cat), "download/cat")
		b.ReportMetric(mbps(down)/mbps(catPipe), "download/cat-pipe")
		b.ReportMetric(mbps(up)/mbps(catCopy), "upload/cat-copy")
		b.ReportMetric(float64(n), "samples")
		b.ReportMetric(0, "ns/op")
		for _, m := range []struct {
			name string
			s    samples
		}{{"upload", up}, {"download", down}, {"cat > /dev/null", cat}, {"cat | cat > /dev/null", catPipe}, {"cat | cat > copy", catCopy}} {
			b.Logf("%s: n=%d p50=%.0f MB/s (times: p50 %v, p95 %v, p99 %v)", m.name, len(m.s), mbps(m.s), m.s.percentile(50), m.s.percentile(95), m.s.percentile(99))
		}
	})
}
