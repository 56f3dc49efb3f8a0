package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

func ctxFor(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

// BenchmarkColdStart: a new ID's first `exec true`, from nothing to the
// result (create, network, overlay, container, agent, shell, exec), for
// both network modes, with a user namespace per sandbox (the default:
// idmapped layers, a sysfs of its own) and without (--userns=false), and
// beside them `crun run` of BenchmarkRuntimeRun's bundle (the goal's
// denominator, issue 19). The three are measured in one pass, a sample
// of each in turn, so that a loaded machine's drift hits them alike: the
// userns sub-benchmark takes every set and reports its own, the
// no-userns one reports the other with crun run's p50 and the ratio of
// the two (crun-run-p50-ms, cold/crun-run-p50). Each sample starts from
// the same state (beforeColdSample: what the sample before left running
// has settled, and memory was just freed: coldmemory_test.go says why).
// The sandboxes are kept until the end. Each daemon's log line "CPU per
// cold start" gives the CPU time a cold start took in the daemon (with
// the runtime processes it waited for) and in its sandboxes' cgroups,
// which tells work from waiting when the wall time moves.
func BenchmarkColdStart(b *testing.B) {
	for _, mode := range []api.NetworkMode{api.NetworkNone, api.NetworkInternet} {
		var with, without, crunRun samples
		b.Run(string(mode)+"/userns", func(b *testing.B) {
			once(b, func(b *testing.B) {
				with, without, crunRun = coldStarts(b, mode)
				with.report(b)
			})
		})
		b.Run(string(mode)+"/no-userns", func(b *testing.B) {
			once(b, func(b *testing.B) {
				without.report(b)
				if len(crunRun) > 0 {
					ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
					b.ReportMetric(ms(crunRun.percentile(50)), "crun-run-p50-ms")
					b.ReportMetric(ms(without.percentile(50))/ms(crunRun.percentile(50)), "cold/crun-run-p50")
				}
			})
		})
	}
}

// coldStarts takes sampleCount cold starts from a daemon with user
// namespaces, as many from one without and as many `crun run`s (none
// without crun), in turn.
func coldStarts(b *testing.B, mode api.NetworkMode) (with, without, crunRun samples) {
	sets, crunRun := interleavedColdStarts(b, mode, runtimeRunner(b),
		testdaemon.Start(b, testdaemon.Options{Args: []string{"--userns=true"}}),
		testdaemon.Start(b, testdaemon.Options{Args: []string{"--userns=false"}}))
	return sets[0], sets[1], crunRun
}

// runtimeRunner is BenchmarkRuntimeRun's `crun run` of /usr/bin/true as
// a function of the sample's number, nil without crun.
func runtimeRunner(b *testing.B) func(i int) {
	crun, err := exec.LookPath("crun")
	if err != nil {
		return nil
	}
	bundle, root := probeBundle(b), b.TempDir()
	return func(i int) {
		if out, err := exec.Command(crun, "--root", root, "run", "--bundle", bundle, fmt.Sprintf("cold-run-%d-%d", os.Getpid(), i)).CombinedOutput(); err != nil {
			b.Fatalf("crun run: %v: %s", err, out)
		}
	}
}

// interleavedColdStarts takes sampleCount cold starts in mode from each
// of daemons, and as many runs of runtimeRun if not nil, one of each in
// turn, and returns each daemon's and runtimeRun's. With runtimeRun the
// first two daemons trade places every round (inTurn), so that each
// follows runtimeRun's sample as often.
func interleavedColdStarts(b *testing.B, mode api.NetworkMode, runtimeRun func(i int), daemons ...*testdaemon.Daemon) ([]samples, samples) {
	ctx := ctxFor(b)
	n := sampleCount()
	sets := make([]samples, len(daemons))
	cpu := make([]coldStartCPU, len(daemons))
	kept := make([]samples, len(daemons)) // bytes, as samples for their percentile
	var runs samples
	order, other := upTo(len(daemons)), 0
	if runtimeRun != nil && len(daemons) > 1 {
		other = 1
	}
	for i := 0; i < n; i++ {
		for _, k := range inTurn(i, order, 0, other) {
			d := daemons[k]
			sb := d.Client.Sandbox(fmt.Sprintf("cold-%d", i), client.WithNetwork(api.NetworkOptions{Mode: mode}))
			beforeColdSample()
			mem := keptMemory(d)
			before := takeColdStartCPU(d)
			start := time.Now()
			if res, err := sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, res)
			}
			sets[k] = append(sets[k], time.Since(start))
			cpu[k].add(before, takeColdStartCPU(d))
			kept[k] = append(kept[k], time.Duration(keptMemory(d)-mem))
		}
		if runtimeRun != nil {
			beforeColdSample()
			start := time.Now()
			runtimeRun(i)
			runs = append(runs, time.Since(start))
		}
	}
	for k, d := range daemons {
		b.Logf("daemon %d of %d, boot steps p50: %s", k+1, len(daemons), bootSteps(d.Logs()))
		b.Logf("daemon %d of %d, CPU per cold start: %s", k+1, len(daemons), cpu[k])
		b.Logf("daemon %d of %d, memory a cold start left in its sandboxes' cgroups p50 %d KiB", k+1, len(daemons), kept[k].percentile(50)/1024)
	}
	// Destroy outside the measurement.
	for _, d := range daemons {
		for i := 0; i < n; i++ {
			d.Client.Sandbox(fmt.Sprintf("cold-%d", i)).Destroy(ctx)
		}
	}
	return sets, runs
}

// coldStartCPU is the CPU time cold starts took, one sample each: the
// daemon's (its own and its reaped children's: the runtime's processes)
// and its sandboxes' cgroups' (crun's child once it joined the cgroup,
// the agent, the shell). On a loaded host CPU moves far less than wall
// time, and it tells work from waiting.
type coldStartCPU struct{ daemon, sandboxes samples }

// cpuReading is a daemon's and its sandboxes' CPU time so far.
type cpuReading struct{ daemon, sandboxes time.Duration }

func takeColdStartCPU(d *testdaemon.Daemon) cpuReading {
	return cpuReading{daemon: processTreeCPU(d.PID()), sandboxes: cgroupParentCPU(d.CgroupParent)}
}

func (c *coldStartCPU) add(before, after cpuReading) {
	c.daemon = append(c.daemon, after.daemon-before.daemon)
	c.sandboxes = append(c.sandboxes, after.sandboxes-before.sandboxes)
}

func (c coldStartCPU) String() string {
	mean := func(s samples) float64 {
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		return float64(sum.Microseconds()) / 1000 / float64(max(len(s), 1))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return fmt.Sprintf("the daemon and the runtime processes it waited for mean %.1f ms (in clock ticks of 10 ms), its sandboxes p50 %.1f ms (p25 %.1f, p75 %.1f)",
		mean(c.daemon), ms(c.sandboxes.percentile(50)), ms(c.sandboxes.percentile(25)), ms(c.sandboxes.percentile(75)))
}

// processTreeCPU is the user and system time of process pid and of its
// children it has waited for (/proc/PID/stat), 0 if unreadable.
func processTreeCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	_, rest, _ := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, v := range f[11:15] { // utime, stime, cutime, cstime
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// takeCPU is the CPU time d and its sandboxes have used so far: every
// thread of the daemon's process (a take's registry row, naming and
// publishing run there, beside the call) and the sandboxes' cgroups. On a
// loaded host a pair of crun takes' wall times is noise (the same build
// against itself: 13.4 against 19.4 ms p50 at load 22), their CPU time
// far less.
func takeCPU(d *testdaemon.Daemon) time.Duration {
	return processCPU(d.PID()) + sandboxCPU(d)
}

// processCPU is the CPU time the threads of process pid have used, from
// their schedstat (nanoseconds); 0 if unreadable.
func processCPU(pid int) time.Duration {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var ns int64
	for _, t := range tasks {
		var v int64
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name())); err == nil {
			fmt.Sscan(string(b), &v)
		}
		ns += v
	}
	return time.Duration(ns)
}

// cgroupParentCPU is the CPU time of every cgroup below the daemon's
// cgroup parent (cgroup v2, or v1's cpuacct).
func cgroupParentCPU(parent string) time.Duration {
	if cpu := cgroupCPU(filepath.Join("/sys/fs/cgroup", parent)); cpu > 0 {
		return cpu
	}
	return cgroupCPU(filepath.Join("/sys/fs/cgroup/cpuacct", parent))
}

// bootSteps is the median of each step of the starts a daemon's debug
// log reports ("sandbox boot" lines: steps="network=1.2ms overlay=...").
func bootSteps(log string) string { return logSteps(log, "sandbox boot") }

// logSteps is the median of each step of a daemon's debug log lines with
// message msg (steps="a=1.2ms b=...").
func logSteps(log, msg string) string {
	var order []string
	took := map[string]samples{}
	for _, line := range strings.Split(log, "\n") {
		_, rest, ok := strings.Cut(line, `msg="`+msg+`"`)
		if !ok {
			continue
		}
		_, steps, _ := strings.Cut(rest, `steps="`)
		steps, _, _ = strings.Cut(steps, `"`)
		for _, kv := range strings.Fields(steps) {
			name, v, _ := strings.Cut(kv, "=")
			d, err := time.ParseDuration(v)
			if err != nil {
				continue
			}
			if _, seen := took[name]; !seen {
				order = append(order, name)
			}
			took[name] = append(took[name], d)
		}
	}
	var out []string
	for _, name := range order {
		out = append(out, fmt.Sprintf("%s=%.1fms", name, float64(took[name].percentile(50))/1e6))
	}
	return strings.Join(out, " ")
}

// BenchmarkColdStartBaseline: BenchmarkColdStart's default (user
// namespaces on) against another build of sandboxd, BENCH_BASELINE (say,
// main's before a change), sample by sample in one run, so that a change
// to the start path is measured before and after on the same loaded
// machine. With BENCH_BASELINE_BIN_DIR=DIR instead, the baseline is that
// build's sandboxd with its own agent and spawn wrapper (needed when the
// change is in the agent, or the agent protocol moved). Skipped without
// either.
func BenchmarkColdStartBaseline(b *testing.B) {
	base, ok := baselineOptions(nil)
	if !ok {
		base = testdaemon.Options{Binary: os.Getenv("BENCH_BASELINE")}
	}
	if base.Binary == "" {
		b.Skip("neither BENCH_BASELINE nor BENCH_BASELINE_BIN_DIR names a sandboxd build to compare with")
	}
	withArgs := func(args ...string) testdaemon.Options {
		o := base
		o.Args = append(append([]string(nil), base.Args...), args...)
		return o
	}
	for _, mode := range []api.NetworkMode{api.NetworkNone, api.NetworkInternet} {
		var before, after samples
		b.Run(string(mode)+"/baseline", func(b *testing.B) {
			once(b, func(b *testing.B) {
				sets, _ := interleavedColdStarts(b, mode, nil,
					testdaemon.Start(b, withArgs()),
					testdaemon.Start(b, testdaemon.Options{}))
				before, after = sets[0], sets[1]
				before.report(b)
			})
		})
		b.Run(string(mode)+"/this", func(b *testing.B) {
			once(b, func(b *testing.B) { after.report(b) })
		})
	}
	// From the warm pool, as BenchmarkColdStartWarmPool (take-cpu-p50-ms too).
	var before, after, beforeCPU, afterCPU samples
	b.Run("pooled/baseline", func(b *testing.B) {
		once(b, func(b *testing.B) {
			args := []string{"--warm-pool", "1", "--default-memory", "128Mi"}
			daemons := []*testdaemon.Daemon{
				testdaemon.Start(b, withArgs(args...)),
				testdaemon.Start(b, testdaemon.Options{Args: args}),
			}
			ctx := ctxFor(b)
			sets := make([]samples, len(daemons))
			cpu := make([]samples, len(daemons))
			for i := 0; i < sampleCount(); i++ {
				for k, d := range daemons {
					for _, d := range daemons { // one's refill would slow the other's start
						waitPoolReady(b, d)
					}
					// As in BenchmarkColdStartWarmPool, take a sandbox that
					// just joined the pool. One that waited through the other
					// daemon's sample has settled, which the pool sandbox a
					// create finds soon after the last one has not.
					if _, err := d.Client.Sandbox(fmt.Sprintf("spent-%d", i)).Exec(ctx, "true"); err != nil {
						b.Fatalf("exec: %v", err)
					}
					waitPoolReady(b, d)
					c0 := takeCPU(d)
					start := time.Now()
					if res, err := d.Client.Sandbox(fmt.Sprintf("pooled-%d", i)).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
						b.Fatalf("exec: %v", err)
					}
					sets[k] = append(sets[k], time.Since(start))
					cpu[k] = append(cpu[k], takeCPU(d)-c0)
				}
			}
			before, after = sets[0], sets[1]
			beforeCPU, afterCPU = cpu[0], cpu[1]
			before.report(b)
			reportTakeCPU(b, beforeCPU)
			b.Logf("take steps p50: baseline %s; this %s",
				logSteps(daemons[0].Logs(), "sandbox adopted"), logSteps(daemons[1].Logs(), "sandbox adopted"))
		})
	})
	b.Run("pooled/this", func(b *testing.B) {
		once(b, func(b *testing.B) {
			after.report(b)
			reportTakeCPU(b, afterCPU)
		})
	})
}

// BenchmarkColdStartNetworkModes: the cost of internet networking at a
// cold start (issue 19: at most 1.2x the none case), measured as a new
// ID's first `exec true` in mode none and in mode internet from one
// daemon with default flags, a sample of each in turn, so that both see
// the same load. BenchmarkColdStart measures each mode in a pass of its
// own, whose ratio a loaded machine's drift can bend.
func BenchmarkColdStartNetworkModes(b *testing.B) {
	var none, internet samples
	b.Run("none", func(b *testing.B) {
		once(b, func(b *testing.B) {
			d := testdaemon.Start(b, testdaemon.Options{})
			ctx := ctxFor(b)
			modes := []api.NetworkMode{api.NetworkNone, api.NetworkInternet}
			sets := make([]samples, len(modes))
			n := sampleCount()
			for i := 0; i < n; i++ {
				for k, mode := range modes {
					sb := d.Client.Sandbox(fmt.Sprintf("%s-%d", mode, i), client.WithNetwork(api.NetworkOptions{Mode: mode}))
					start := time.Now()
					if res, err := sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
						b.Fatalf("exec: %v %+v", err, res)
					}
					sets[k] = append(sets[k], time.Since(start))
				}
			}
			for _, mode := range modes {
				var lines []string
				for _, l := range strings.Split(d.Logs(), "\n") {
					if strings.Contains(l, "sandbox="+string(mode)+"-") {
						lines = append(lines, l)
					}
				}
				b.Logf("%s, boot steps p50: %s", mode, bootSteps(strings.Join(lines, "\n")))
			}
			for i := 0; i < n; i++ {
				for _, mode := range modes {
					d.Client.Sandbox(fmt.Sprintf("%s-%d", mode, i)).Destroy(ctx)
				}
			}
			none, internet = sets[0], sets[1]
			none.report(b)
		})
	})
	b.Run("internet", func(b *testing.B) {
		once(b, func(b *testing.B) {
			internet.report(b)
			if p := none.percentile(50); p > 0 {
				b.ReportMetric(float64(internet.percentile(50))/float64(p), "internet/none-p50")
			}
		})
	})
}

// BenchmarkColdStartWarmPool: the same, when the daemon keeps a sandbox
// started ahead (--warm-pool): a new ID takes it and names it. Each
// sample waits (outside the measurement) for the pool to be refilled, so
// this is the latency while the pool keeps up with the creation rate.
// take-cpu-p50-ms is the CPU time a take used, the daemon's and its
// sandboxes' (takeCPU): what a loaded host's wall times hide.
func BenchmarkColdStartWarmPool(b *testing.B) {
	once(b, func(b *testing.B) {
		measurePooledStarts(b, []string{"--warm-pool", "1", "--default-memory", "128Mi"}, "pooled")
	})
}

// waitPoolReady waits until the daemon's warm pool holds a started sandbox.
func waitPoolReady(b *testing.B, d *testdaemon.Daemon) {
	waitGauge(b, d, `sandboxd_warm_pool{state="ready"} 1`)
}

// BenchmarkWarmExec: round trip of `exec true` on a running sandbox's
// default session, through the SDK, the daemon and the agent.
func BenchmarkWarmExec(b *testing.B) { warmExec(b, testdaemon.Options{}, "warm") }

// warmExec measures `exec true` round trips on the sandbox id of a daemon
// started with opts.
func warmExec(b *testing.B, opts testdaemon.Options, id string) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, opts)
		ctx := ctxFor(b)
		sb := d.Client.Sandbox(id)
		for i := 0; i < 20; i++ { // warm up connections and the shell
			sb.Exec(ctx, "true")
		}
		s := measure(b, sampleCount()*10, func(int) {
			if res, err := sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v", err)
			}
		})
		s.report(b)
	})
}

// BenchmarkIdleMemory: host memory used per idle sandbox with 100 up
// (each has run one command), measured as the growth of MemTotal -
// MemAvailable, and as what the sandboxes' cgroups are charged.
func BenchmarkIdleMemory(b *testing.B) {
	once(b, func(b *testing.B) {
		// 128 MiB each, so 100 fit the default memory budget and none is
		// put to sleep to make room.
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-memory", "128Mi"}})
		ctx := ctxFor(b)
		const n = 100
		// One sandbox first, so that shared costs (page cache of the agent
		// and bash binaries) are not charged to the 100.
		d.Client.Sandbox("idle-warmup").Exec(ctx, "true")
		time.Sleep(time.Second)
		before := usedMemory(b)
		for i := 0; i < n; i++ {
			if _, err := d.Client.Sandbox(fmt.Sprintf("idle-%d", i)).Exec(ctx, "true"); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second)
		after := usedMemory(b)
		perHost := float64(after-before) / n / (1 << 20)
		charged := cgroupCharged(b, d)
		b.ReportMetric(perHost, "host-MiB/sandbox")
		b.ReportMetric(charged/n/(1<<20), "cgroup-MiB/sandbox")
		b.ReportMetric(0, "ns/op")
		b.Logf("%d idle sandboxes: %.2f MiB of host memory each, %.2f MiB charged to each sandbox's cgroup", n, perHost, charged/n/(1<<20))
	})
}

func usedMemory(b *testing.B) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var total, avail int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v int64
		if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &v); err == nil {
			total = v
		}
		if _, err := fmt.Sscanf(sc.Text(), "MemAvailable: %d kB", &v); err == nil {
			avail = v
		}
	}
	return (total - avail) << 10
}

// cgroupCharged sums memory.usage of every sandbox cgroup of this daemon
// (cgroup v1 memory hierarchy or v2).
func cgroupCharged(b *testing.B, d *testdaemon.Daemon) float64 {
	var sum float64
	for _, pattern := range []string{"/sys/fs/cgroup/memory/" + d.CgroupParent + "/*/memory.usage_in_bytes", "/sys/fs/cgroup/" + d.CgroupParent + "/*/memory.current"} {
		files, _ := filepath.Glob(pattern)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			var v float64
			fmt.Sscan(string(data), &v)
			sum += v
		}
	}
	return sum
}

// BenchmarkRuntimeRun is the baseline beside the cold start: `<runtime>
// run` of a container on the same kind of root (the host's /usr) running
// /usr/bin/true, with the same namespaces, limits and seccomp profile. And
// `podman run --rm` when podman is installed.
func BenchmarkRuntimeRun(b *testing.B) {
	testdaemon.SkipUnlessRoot(b)
	for _, name := range []string{"crun", "runc"} {
		path, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		b.Run(name, func(b *testing.B) {
			once(b, func(b *testing.B) {
				bundle := probeBundle(b)
				root := b.TempDir()
				s := measure(b, sampleCount(), func(i int) {
					id := fmt.Sprintf("bench-%d-%d", os.Getpid(), i)
					out, err := exec.Command(path, "--root", root, "run", "--bundle", bundle, id).CombinedOutput()
					if err != nil {
						b.Fatalf("%s run: %v: %s", name, err, out)
					}
				})
				s.report(b)
			})
		})
	}
	if podman, err := exec.LookPath("podman"); err == nil {
		b.Run("podman", func(b *testing.B) {
			once(b, func(b *testing.B) {
				s := measure(b, sampleCount(), func(int) {
					if out, err := exec.Command(podman, "run", "--rm", "--network=none", "--rootfs", "/", "/usr/bin/true").CombinedOutput(); err != nil {
						b.Fatalf("podman: %v: %s", err, out)
					}
				})
				s.report(b)
			})
		})
	}
}

func probeBundle(b *testing.B) string {
	bundle := b.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"usr", "proc", "dev", "sys", "run", "tmp"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	for _, name := range []string{"bin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + name); err == nil {
			os.Symlink(target, filepath.Join(rootfs, name))
		}
	}
	spec, err := runtime.NewSpec(runtime.SpecOptions{
		Hostname: "bench", Rootfs: rootfs, Args: []string{"/usr/bin/true"}, Env: []string{"PATH=/usr/bin"},
		Mounts:      []specs.Mount{{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro"}}},
		CgroupsPath: fmt.Sprintf("/sandboxd-bench/%d", os.Getpid()),
		Resources:   runtime.Resources{MemoryBytes: 256 << 20, MilliCPU: 1000, Pids: 256},
	})
	if err != nil {
		b.Fatal(err)
	}
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = ""
		}
	}
	data, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		b.Fatal(err)
	}
	return bundle
}

// reportTakeCPU reports the median CPU time of takes (takeCPU over
// each, take-cpu-p50-ms).
func reportTakeCPU(b *testing.B, cpu samples) {
	b.ReportMetric(float64(cpu.percentile(50).Microseconds())/1000, "take-cpu-p50-ms")
}

// measurePooledStarts starts a daemon with args (a warm pool of one) and
// reports the time from a new ID's first exec to its result, each sample
// waiting outside the measurement for the pool to be refilled. With
// BENCH_POOL_NEIGHBOUR set, a second daemon with the same args runs idle
// beside it.
func measurePooledStarts(b *testing.B, args []string, prefix string) {
	d := testdaemon.Start(b, testdaemon.Options{Args: args})
	if os.Getenv("BENCH_POOL_NEIGHBOUR") != "" {
		// A second daemon, as BenchmarkColdStartBaseline/pooled has, that
		// only waits (its pool sandbox too): whether takes are faster side
		// by side because another daemon is there (coldpool.txt).
		waitPoolReady(b, testdaemon.Start(b, testdaemon.Options{Args: args}))
		b.Logf("with an idle neighbour daemon (BENCH_POOL_NEIGHBOUR)")
	}
	ctx := ctxFor(b)
	n := sampleCount()
	var s, cpu samples
	for i := 0; i < n; i++ {
		waitPoolReady(b, d)
		c0 := takeCPU(d)
		start := time.Now()
		if res, err := d.Client.Sandbox(fmt.Sprintf("%s-%d", prefix, i)).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
			b.Fatalf("exec: %v", err)
		}
		s = append(s, time.Since(start))
		cpu = append(cpu, takeCPU(d)-c0)
	}
	s.report(b)
	reportTakeCPU(b, cpu)
	b.Logf("take steps p50: %s", logSteps(d.Logs(), "sandbox adopted"))
	for i := 0; i < n; i++ {
		d.Client.Sandbox(fmt.Sprintf("%s-%d", prefix, i)).Destroy(ctx)
	}
}
