package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkGVisorShellFloor runs internal/agent/session's
// BenchmarkShellFloor inside a gVisor sandbox and a crun sandbox of one
// daemon: what a round trip between the agent and a running shell costs
// at the least in each kernel (a byte to `cat` and back over pipes; a line
// to bash's `read` and back), beside the session's whole path for `exec
// true` without HTTP, and the shell's own part of a dispatch. Reported as
// <runtime>-<part>-p50-us (shell-only: mean-us; syscount: the shell's
// system calls per exec, <runtime>-syscount-bash-calls). BENCH_FLOOR_BASELINE=FILE
// (a session test binary of another build: go test -c) runs beside it,
// alternating, as baseline-<runtime>-<part>. BENCH_FLOOR_PARTS=RE runs
// only the parts RE matches (e.g. 'exec$'), BENCH_FLOOR_ROUNDS=N that many
// rounds (default 3).
func BenchmarkGVisorShellFloor(b *testing.B) {
	needRunsc(b)
	once(b, func(b *testing.B) {
		root, err := filepath.Abs("..")
		if err != nil {
			b.Fatal(err)
		}
		bin := filepath.Join(b.TempDir(), "session.test")
		cmd := exec.Command("go", "test", "-c", "-o", bin, "./internal/agent/session")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("building the session tests: %v\n%s", err, out)
		}
		tests := map[string]string{"": bin}
		if base := os.Getenv("BENCH_FLOOR_BASELINE"); base != "" {
			tests["baseline-"] = base
		}
		d := testdaemon.Start(b, testdaemon.Options{Args: append(gvisorArgs, "--default-network", "none")})
		ctx := ctxFor(b)
		rounds := 3
		if n, err := strconv.Atoi(os.Getenv("BENCH_FLOOR_ROUNDS")); err == nil && n > 0 {
			rounds = n
		}
		pattern := "BenchmarkShellFloor"
		if parts := os.Getenv("BENCH_FLOOR_PARTS"); parts != "" {
			pattern += "/" + parts
		}
		for _, rt := range []string{"gvisor", "crun"} {
			sb := d.Client.Sandbox("gfloor-"+rt, client.WithRuntime(rt))
			for prefix, path := range tests {
				data, err := os.ReadFile(path)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := sb.WriteFile(ctx, "/tmp/"+prefix+"session.test", data, client.WithMode(0o755)); err != nil {
					b.Fatalf("uploading to %s: %v", rt, err)
				}
			}
			results := map[string][]float64{}
			for round := 0; round < rounds; round++ {
				for _, prefix := range []string{"", "baseline-"} {
					if tests[prefix] == "" {
						continue
					}
					res, err := sb.Exec(ctx, "cd /tmp && ./"+prefix+"session.test -test.run '^$' -test.bench '"+pattern+"' -test.benchtime 300x")
					if err != nil || res.ExitCode != 0 {
						b.Fatalf("floor on %s: %v %+v", rt, err, res)
					}
					for name, v := range floorMetrics(res.Stdout) {
						results[prefix+rt+"-"+name] = append(results[prefix+rt+"-"+name], v)
					}
					fmt.Printf("%s%s round %d:\n%s", prefix, rt, round+1, res.Stdout)
				}
			}
			for name, vs := range results {
				b.ReportMetric(median(vs), name)
			}
		}
	})
}

// floorMetrics reads "BenchmarkShellFloor/PART-N ... V p50-us ..." lines
// (mean-us for shell-only, bash-calls for syscount) into PART-p50-us: V.
func floorMetrics(out string) map[string]float64 {
	m := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[0], "BenchmarkShellFloor/") {
			continue
		}
		part := strings.TrimPrefix(f[0], "BenchmarkShellFloor/")
		if i := strings.LastIndexByte(part, '-'); i > 0 {
			if _, err := strconv.Atoi(part[i+1:]); err == nil {
				part = part[:i] // the -GOMAXPROCS suffix
			}
		}
		for i := 1; i+1 < len(f); i++ {
			if strings.HasSuffix(f[i+1], "-us") || strings.HasSuffix(f[i+1], "-calls") {
				if v, err := strconv.ParseFloat(f[i], 64); err == nil {
					m[part+"-"+f[i+1]] = v
				}
			}
		}
	}
	return m
}

func median(vs []float64) float64 {
	s := append([]float64(nil), vs...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
