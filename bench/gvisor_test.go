package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// The gVisor benchmarks are the core ones on a daemon whose default
// runtime is gvisor (so every sandbox, pool members included, runs on
// runsc), beside the raw `runsc run` baseline of BenchmarkRuntimeRun.

var gvisorArgs = []string{"--default-runtime", "gvisor"}

func needRunsc(b *testing.B) string {
	testdaemon.SkipUnlessRoot(b)
	path := filepath.Join(testdaemon.BinDir(b), "runsc")
	if _, err := os.Stat(path); err != nil {
		b.Skip("no runsc beside sandboxd: make build builds bin/runsc")
	}
	return path
}

// BenchmarkGVisorColdStart: a new ID's first `exec true` on gVisor,
// network mode none.
func BenchmarkGVisorColdStart(b *testing.B) {
	needRunsc(b)
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: append(gvisorArgs, "--default-network", "none")})
		ctx := ctxFor(b)
		n := sampleCount()
		s := measure(b, n, func(i int) {
			if res, err := d.Client.Sandbox(fmt.Sprintf("gcold-%d", i)).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, res)
			}
		})
		s.report(b)
		for i := 0; i < n; i++ {
			d.Client.Sandbox(fmt.Sprintf("gcold-%d", i)).Destroy(ctx)
		}
	})
}

// BenchmarkGVisorColdStartWarmPool: the same with a pool of one gVisor
// sandbox (each sample waits for the refill outside the measurement;
// p50-ms). Beside each take, the floor it is measured against: an `exec
// true` on a gVisor sandbox of the same daemon that has long been running
// (warm-exec-p50-ms, taken just before the take), and a second `exec
// true` on the sandbox just taken, right after the take
// (second-exec-p50-ms), and the CPU time the daemon's sandboxes used
// during the take, the second exec and the warm exec (take-cpu-p50-ms,
// second-exec-cpu-p50-ms, warm-exec-cpu-p50-ms). With BENCH_BASELINE_BIN_DIR=DIR (another build's
// sandboxd and sandbox-agent), a daemon of that build takes from its pool
// in each sample too, in turn (baseline-p50-ms,
// baseline-second-exec-p50-ms). Every daemon's pool is full before any
// take, so that no refill runs beside a measured call.
func BenchmarkGVisorColdStartWarmPool(b *testing.B) {
	needRunsc(b)
	once(b, func(b *testing.B) {
		args := append(gvisorArgs, "--warm-pool", "1", "--default-memory", "128Mi", "--default-network", "none")
		type side struct {
			d                    *testdaemon.Daemon
			warm                 *client.Sandbox
			take, second, warmed samples
			takeCPU, secondCPU   samples
			warmCPU              samples
		}
		ctx := ctxFor(b)
		execTrue := func(sb *client.Sandbox) time.Duration {
			start := time.Now()
			if res, err := sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, res)
			}
			return time.Since(start)
		}
		open := func(o testdaemon.Options) *side {
			s := &side{d: testdaemon.Start(b, o)}
			s.warm = s.d.Client.Sandbox("gpool-warm")
			for i := 0; i < 10; i++ { // the first takes a pool sandbox; then warm it up
				execTrue(s.warm)
			}
			return s
		}
		sides := []*side{open(testdaemon.Options{Args: args})}
		if o, ok := baselineOptions(args); ok {
			sides = append(sides, open(o))
		}
		for i := 0; i < sampleCount(); i++ {
			for _, s := range sides {
				for _, s := range sides {
					waitPoolReady(b, s.d)
				}
				w0 := sandboxCPU(s.d)
				s.warmed = append(s.warmed, execTrue(s.warm))
				sb := s.d.Client.Sandbox(fmt.Sprintf("gpooled-%d", i))
				c0 := sandboxCPU(s.d)
				s.warmCPU = append(s.warmCPU, c0-w0)
				s.take = append(s.take, execTrue(sb))
				c1 := sandboxCPU(s.d)
				s.second = append(s.second, execTrue(sb))
				s.takeCPU = append(s.takeCPU, c1-c0)
				s.secondCPU = append(s.secondCPU, sandboxCPU(s.d)-c1)
				sb.Destroy(ctx)
			}
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		g := sides[0]
		g.take.report(b)
		b.ReportMetric(ms(g.second.percentile(50)), "second-exec-p50-ms")
		b.ReportMetric(ms(g.warmed.percentile(50)), "warm-exec-p50-ms")
		b.Logf("interleaved p50: take (first exec on a new ID) %.2fms, second exec on it %.2fms, warm exec on a long-running gVisor sandbox %.2fms",
			ms(g.take.percentile(50)), ms(g.second.percentile(50)), ms(g.warmed.percentile(50)))
		b.ReportMetric(ms(g.takeCPU.percentile(50)), "take-cpu-p50-ms")
		b.ReportMetric(ms(g.secondCPU.percentile(50)), "second-exec-cpu-p50-ms")
		b.ReportMetric(ms(g.warmCPU.percentile(50)), "warm-exec-cpu-p50-ms")
		b.Logf("CPU time of the daemon's sandboxes (their cgroups) p50: take %.2fms, second exec %.2fms, warm exec %.2fms",
			ms(g.takeCPU.percentile(50)), ms(g.secondCPU.percentile(50)), ms(g.warmCPU.percentile(50)))
		b.Logf("take steps p50: %s", logSteps(g.d.Logs(), "sandbox adopted"))
		if len(sides) > 1 {
			base := sides[1]
			b.ReportMetric(ms(base.take.percentile(50)), "baseline-p50-ms")
			b.ReportMetric(ms(base.second.percentile(50)), "baseline-second-exec-p50-ms")
			b.ReportMetric(ms(base.takeCPU.percentile(50)), "baseline-take-cpu-p50-ms")
			b.Logf("baseline %s: take %.2fms, second exec %.2fms, warm exec %.2fms; CPU take %.2fms, second exec %.2fms; take steps p50: %s",
				os.Getenv("BENCH_BASELINE_BIN_DIR"), ms(base.take.percentile(50)), ms(base.second.percentile(50)), ms(base.warmed.percentile(50)),
				ms(base.takeCPU.percentile(50)), ms(base.secondCPU.percentile(50)), logSteps(base.d.Logs(), "sandbox adopted"))
		}
	})
}

// sandboxCPU is the CPU time d's sandboxes have used so far: their
// cgroups' parent's (cgroup v2 cpu.stat, or v1 cpuacct), 0 if unreadable.
// On a loaded host a call's CPU time moves far less than its wall time,
// and a quiet gVisor call takes about its sandbox's CPU time.
func sandboxCPU(d *testdaemon.Daemon) time.Duration { return cgroupCPUAt(d.CgroupParent) }

// cgroupCPUAt is the CPU time used in the cgroup at path below every
// hierarchy's root (v2's, else v1's cpuacct), 0 if unreadable.
func cgroupCPUAt(path string) time.Duration {
	if v2 := filepath.Join("/sys/fs/cgroup", path); fileExists(filepath.Join(v2, "cpu.stat")) {
		return cgroupCPU(v2)
	}
	return cgroupCPU(filepath.Join("/sys/fs/cgroup/cpuacct", path))
}

// cgroupCPUs is the cpuset.cpus of the cgroup at path below every
// hierarchy's root (v2's, else v1's cpuset): the host CPUs a sandbox is
// pinned to ("" if unpinned or unreadable).
func cgroupCPUs(path string) string {
	for _, dir := range []string{filepath.Join("/sys/fs/cgroup", path), filepath.Join("/sys/fs/cgroup/cpuset", path)} {
		if b, err := os.ReadFile(filepath.Join(dir, "cpuset.cpus")); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// cgroupCPU is the CPU time used in the cgroup directory dir: cpu.stat's
// usage_usec (v2) or cpuacct.usage (v1), 0 if neither is readable.
func cgroupCPU(dir string) time.Duration {
	if b, err := os.ReadFile(filepath.Join(dir, "cpu.stat")); err == nil {
		var us int64
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				fmt.Sscan(v, &us)
			}
		}
		return time.Duration(us) * time.Microsecond
	}
	var ns int64
	if b, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage")); err == nil {
		fmt.Sscan(string(b), &ns)
	}
	return time.Duration(ns)
}

// BenchmarkGVisorWarmExec: `exec true` round trip on a running gVisor
// sandbox (p50-ms...). Beside it, sample by sample, the floor under any
// call through the agent: the agent's health call straight to its socket
// (no daemon, no shell; agent-health-p50-ms), a call the daemon forwards
// to the agent that runs no shell (GET env; forward-p50-ms: what an exec
// costs without its command), and all three again on a crun sandbox of
// another daemon of this build (crun-exec-p50-ms, crun-agent-health-p50-ms,
// crun-forward-p50-ms), so that what gVisor adds is read off one run.
// The health call in that loop comes right after the exec, whose
// settling (done after its answer, on the sandbox's one CPU) it shares;
// agent-health-alone-p50-ms (and crun-...) is the health call again in a
// loop of its own, after the exec loop: the call's own cost.
// agent-health-idle-p50-ms (crun-...) is that call once more, each after
// idlePause in which its sandbox ran nothing, as the exec comes after the
// other sides' calls: beside agent-health-alone it reads what idleness
// costs a call (the CPU of both loops: agent-health-alone-cpu-p50-ms,
// agent-health-idle-cpu-p50-ms).
// exec-cpu-p50-ms (forward-cpu-, crun-exec-cpu-) is the CPU time the
// sandbox used during the call (its own cgroup): a gVisor sandbox runs on
// one host CPU, so its exec takes at least that long, whatever waits are
// cut.
// With BENCH_BASELINE_BIN_DIR=DIR (another build's sandboxd and
// sandbox-agent), a daemon of that build runs beside this one and its
// gVisor exec is sampled in turn too (baseline-exec-p50-ms). So that two
// identical builds read alike, the two gVisor sides trade places every
// round (inTurn; crun's goes last), their sandboxes are pinned to the same
// host CPU, and crun's sandbox has a daemon of its own; the log gives
// each gVisor side's exec by what came before it, and its host CPU.
// idlePause is how long BenchmarkGVisorWarmExec's idle health loop lets a
// sandbox sit before each call: longer than the other sides' turns.
const idlePause = 5 * time.Millisecond

func BenchmarkGVisorWarmExec(b *testing.B) {
	needRunsc(b)
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: gvisorArgs})
		ctx := ctxFor(b)
		type side struct {
			d                 *testdaemon.Daemon
			sb                *client.Sandbox
			agent             *http.Client
			exec, health, fwd samples
			healthAlone       samples
			execCPU, fwdCPU   samples
			// healthIdle is the health call after a pause in which the
			// sandbox ran nothing; the CPU of both health loops.
			healthIdle                    samples
			healthAloneCPU, healthIdleCPU samples
			// cgroup is the sandbox's own cgroup; cpus the host CPU it
			// is pinned to.
			cgroup, cpus string
			name         string
			// byTurn[0] are the exec's samples when the side went first
			// in its round (after crun's sample), byTurn[1] when it went
			// after the other gVisor side's.
			byTurn [2]struct{ exec, cpu samples }
		}
		open := func(d *testdaemon.Daemon, rt, id string) *side {
			before, _ := filepath.Glob(filepath.Join(d.RunDir, "sandboxes", "*", "agent.sock"))
			sb := d.Client.Sandbox(id, client.WithRuntime(rt))
			if res, err := sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec on %s: %v %+v", rt, err, res)
			}
			after, _ := filepath.Glob(filepath.Join(d.RunDir, "sandboxes", "*", "agent.sock"))
			sock := newPath(before, after)
			if sock == "" {
				b.Fatalf("no new agent socket under %s", d.RunDir)
			}
			agent := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", sock)
			}}}
			cg := filepath.Join(d.CgroupParent, filepath.Base(filepath.Dir(sock))) // a sandbox's run directory is named by its cgroup's key
			return &side{d: d, sb: sb, agent: agent, cgroup: cg, cpus: cgroupCPUs(cg)}
		}
		// crun's sandbox has a daemon of its own (this build's): with it
		// on this gVisor sandbox's daemon, this side's exec read 12-68%
		// slower than the same build's beside it (3 runs), on a daemon
		// of its own within 6%.
		sides := []*side{open(d, "gvisor", "gwarm-gvisor"), open(testdaemon.Start(b, testdaemon.Options{Args: gvisorArgs}), "crun", "gwarm-crun")}
		sides[0].name = "this build"
		var base *side
		if o, ok := baselineOptions(gvisorArgs); ok {
			// A sandbox is pinned to the host CPU its random key picks;
			// the same build's exec CPU read up to 7% apart on CPUs 0 and
			// 1 of a loaded host, within 3% on one: the baseline's sandbox
			// is made again until it shares this build's CPU.
			bd := testdaemon.Start(b, o)
			for try := 0; ; try++ {
				base = open(bd, "gvisor", fmt.Sprintf("gwarm-gvisor-%d", try))
				if base.cpus == sides[0].cpus || try == 9 {
					break
				}
				if err := base.sb.Destroy(ctx); err != nil {
					b.Fatalf("destroying a baseline sandbox on another CPU: %v", err)
				}
			}
			if base.cpus != sides[0].cpus {
				b.Logf("the baseline's sandbox is pinned to host CPU %q, this build's to %q: they are not alike", base.cpus, sides[0].cpus)
			}
			base.name = "baseline"
			sides = append(sides, base)
		}
		health := func(s *side) {
			resp, err := s.agent.Get("http://agent" + agentapi.PathHealth)
			if err != nil {
				b.Fatalf("agent health: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("agent health: %s", resp.Status)
			}
		}
		forward := func(s *side) {
			if _, err := s.sb.EnvVars(ctx); err != nil {
				b.Fatalf("env: %v", err)
			}
		}
		for i := 0; i < 20; i++ { // warm up connections and the shells
			for _, s := range sides {
				s.sb.Exec(ctx, "true")
				health(s)
				forward(s)
			}
		}
		// With a baseline, the two gVisor sides trade places every round
		// and crun's goes last: each gVisor side follows crun's sample as
		// often as the other gVisor side's, never its own.
		order, other := []int{0, 1}, 0
		if base != nil {
			order, other = []int{0, 2, 1}, 2
		}
		for i := 0; i < sampleCount()*10; i++ {
			for turn, k := range inTurn(i, order, 0, other) {
				s := sides[k]
				c0 := cgroupCPUAt(s.cgroup)
				start := time.Now()
				if res, err := s.sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
					b.Fatalf("exec: %v", err)
				}
				took := time.Since(start)
				cpu := cgroupCPUAt(s.cgroup) - c0
				s.exec, s.execCPU = append(s.exec, took), append(s.execCPU, cpu)
				t := &s.byTurn[min(turn, 1)]
				t.exec, t.cpu = append(t.exec, took), append(t.cpu, cpu)
				start = time.Now()
				health(s)
				s.health = append(s.health, time.Since(start))
				c0 = cgroupCPUAt(s.cgroup)
				start = time.Now()
				forward(s)
				s.fwd = append(s.fwd, time.Since(start))
				s.fwdCPU = append(s.fwdCPU, cgroupCPUAt(s.cgroup)-c0)
			}
		}
		// healthLoop samples the health call on every side in turn, each
		// after pause.
		healthLoop := func(pause time.Duration, record func(s *side, took, cpu time.Duration)) {
			for i := 0; i < sampleCount()*2; i++ {
				for _, k := range inTurn(i, order, 0, other) {
					s := sides[k]
					time.Sleep(pause)
					c0 := cgroupCPUAt(s.cgroup)
					start := time.Now()
					health(s)
					record(s, time.Since(start), cgroupCPUAt(s.cgroup)-c0)
				}
			}
		}
		healthLoop(0, func(s *side, took, cpu time.Duration) {
			s.healthAlone, s.healthAloneCPU = append(s.healthAlone, took), append(s.healthAloneCPU, cpu)
		})
		// The same call into a sandbox that ran nothing for idlePause,
		// as the exec above comes after the other sides' calls. Loaded,
		// it cost a gVisor sandbox (and a crun one) twice the CPU of the
		// call back to back, with the same system calls.
		healthLoop(idlePause, func(s *side, took, cpu time.Duration) {
			s.healthIdle, s.healthIdleCPU = append(s.healthIdle, took), append(s.healthIdleCPU, cpu)
		})
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		g, c := sides[0], sides[1]
		g.exec.report(b)
		b.ReportMetric(ms(g.health.percentile(50)), "agent-health-p50-ms")
		b.ReportMetric(ms(g.healthAlone.percentile(50)), "agent-health-alone-p50-ms")
		b.ReportMetric(ms(c.healthAlone.percentile(50)), "crun-agent-health-alone-p50-ms")
		b.ReportMetric(ms(g.fwd.percentile(50)), "forward-p50-ms")
		b.ReportMetric(ms(c.exec.percentile(50)), "crun-exec-p50-ms")
		b.ReportMetric(ms(c.health.percentile(50)), "crun-agent-health-p50-ms")
		b.ReportMetric(ms(c.fwd.percentile(50)), "crun-forward-p50-ms")
		b.Logf("interleaved p50: gVisor exec %.2fms, agent health %.2fms, forwarded env %.2fms; crun exec %.2fms, agent health %.2fms, forwarded env %.2fms",
			ms(g.exec.percentile(50)), ms(g.health.percentile(50)), ms(g.fwd.percentile(50)),
			ms(c.exec.percentile(50)), ms(c.health.percentile(50)), ms(c.fwd.percentile(50)))
		b.Logf("agent health alone p50: gVisor %.2fms, crun %.2fms", ms(g.healthAlone.percentile(50)), ms(c.healthAlone.percentile(50)))
		for _, s := range []struct {
			prefix string
			side   *side
		}{{"", g}, {"crun-", c}} {
			b.ReportMetric(ms(s.side.healthIdle.percentile(50)), s.prefix+"agent-health-idle-p50-ms")
			b.ReportMetric(ms(s.side.healthAloneCPU.percentile(50)), s.prefix+"agent-health-alone-cpu-p50-ms")
			b.ReportMetric(ms(s.side.healthIdleCPU.percentile(50)), s.prefix+"agent-health-idle-cpu-p50-ms")
		}
		b.Logf("agent health after %v idle p50: gVisor %.2fms (CPU %.2fms, back to back %.2fms), crun %.2fms (CPU %.2fms, back to back %.2fms)", idlePause,
			ms(g.healthIdle.percentile(50)), ms(g.healthIdleCPU.percentile(50)), ms(g.healthAloneCPU.percentile(50)),
			ms(c.healthIdle.percentile(50)), ms(c.healthIdleCPU.percentile(50)), ms(c.healthAloneCPU.percentile(50)))
		b.ReportMetric(ms(g.execCPU.percentile(50)), "exec-cpu-p50-ms")
		b.ReportMetric(ms(g.fwdCPU.percentile(50)), "forward-cpu-p50-ms")
		b.ReportMetric(ms(c.execCPU.percentile(50)), "crun-exec-cpu-p50-ms")
		b.Logf("CPU time of the daemon's sandboxes during the call p50: gVisor exec %.2fms, forwarded env %.2fms; crun exec %.2fms"+
			" (a gVisor sandbox runs on one host CPU: its exec cannot take less time than this)",
			ms(g.execCPU.percentile(50)), ms(g.fwdCPU.percentile(50)), ms(c.execCPU.percentile(50)))
		for _, s := range sides {
			if base != nil && s != c {
				b.Logf("%s (pinned to host CPU %q): gVisor exec p50 %.2fms (CPU %.2fms) right after crun's sample, %.2fms (CPU %.2fms) right after the other gVisor side's",
					s.name, s.cpus, ms(s.byTurn[0].exec.percentile(50)), ms(s.byTurn[0].cpu.percentile(50)),
					ms(s.byTurn[1].exec.percentile(50)), ms(s.byTurn[1].cpu.percentile(50)))
			}
		}
		if base != nil {
			b.ReportMetric(ms(base.exec.percentile(50)), "baseline-exec-p50-ms")
			b.ReportMetric(ms(base.health.percentile(50)), "baseline-agent-health-p50-ms")
			b.ReportMetric(ms(base.healthAlone.percentile(50)), "baseline-agent-health-alone-p50-ms")
			b.ReportMetric(ms(base.healthIdle.percentile(50)), "baseline-agent-health-idle-p50-ms")
			b.ReportMetric(ms(base.execCPU.percentile(50)), "baseline-exec-cpu-p50-ms")
			b.Logf("baseline %s: gVisor exec %.2fms, agent health %.2fms, forwarded env %.2fms", os.Getenv("BENCH_BASELINE_BIN_DIR"),
				ms(base.exec.percentile(50)), ms(base.health.percentile(50)), ms(base.fwd.percentile(50)))
		}
	})
}

// newPath is the one path in after that is not in before ("" if none).
func newPath(before, after []string) string {
	seen := map[string]bool{}
	for _, p := range before {
		seen[p] = true
	}
	for _, p := range after {
		if !seen[p] {
			return p
		}
	}
	return ""
}

// BenchmarkGVisorIdleMemory: host memory per idle gVisor sandbox (each
// has run one command), as BenchmarkIdleMemory; BENCH_IDLE_N of them
// (default 20: a gVisor sandbox costs far more than a container).
func BenchmarkGVisorIdleMemory(b *testing.B) {
	needRunsc(b)
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: append(gvisorArgs, "--default-memory", "128Mi", "--default-network", "none")})
		ctx := ctxFor(b)
		n := 20
		if v := os.Getenv("BENCH_IDLE_N"); v != "" {
			fmt.Sscan(v, &n)
		}
		d.Client.Sandbox("gidle-warmup").Exec(ctx, "true")
		time.Sleep(time.Second)
		before := usedMemory(b)
		for i := 0; i < n; i++ {
			if _, err := d.Client.Sandbox(fmt.Sprintf("gidle-%d", i)).Exec(ctx, "true"); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(2 * time.Second)
		after := usedMemory(b)
		perHost := float64(after-before) / float64(n) / (1 << 20)
		charged := cgroupCharged(b, d) / float64(n+1) / (1 << 20)
		b.ReportMetric(perHost, "host-MiB/sandbox")
		b.ReportMetric(charged, "cgroup-MiB/sandbox")
		b.ReportMetric(0, "ns/op")
		b.Logf("%d idle gVisor sandboxes: %.2f MiB of host memory each, %.2f MiB charged to each sandbox's cgroup", n, perHost, charged)
	})
}

// BenchmarkGVisorColdStartVsRuntimeRun interleaves the two, sample by
// sample (a cold `exec true` on a new ID, then a raw `runsc run`), so that
// their ratio holds on a loaded machine, where runs minutes apart see
// different loads.
//
// With BENCH_BASELINE_BIN_DIR=DIR (another build's sandboxd and
// sandbox-agent, say main's before a change), a daemon of that build runs
// beside this one and takes its cold start in each sample too, reported
// as baseline-cold-p50-ms and baseline-cold/run-p50.
func BenchmarkGVisorColdStartVsRuntimeRun(b *testing.B) {
	runsc := needRunsc(b)
	once(b, func(b *testing.B) {
		d, base := gvisorColdDaemons(b)
		ctx := ctxFor(b)
		bundle := probeBundle(b)
		root := b.TempDir()
		b.Cleanup(func() { exec.Command("umount", "-l", filepath.Join(root, "null-netns")).Run() })
		var cold, raw, baseCold samples
		for i := 0; i < sampleCount(); i++ {
			id := fmt.Sprintf("gratio-%d", i)
			if base != nil && i%2 == 1 {
				baseCold = append(baseCold, coldExec(b, ctx, base, id))
			}
			cold = append(cold, coldExec(b, ctx, d, id))
			start := time.Now()
			rid := fmt.Sprintf("gratio-%d-%d", os.Getpid(), i)
			out, err := exec.Command(runsc, "--root", root, "--platform=systrap", "--overlay2=none", "--host-uds=create",
				"run", "--bundle", bundle, rid).CombinedOutput()
			if err != nil {
				b.Fatalf("runsc run: %v: %s", err, out)
			}
			raw = append(raw, time.Since(start))
			if base != nil && i%2 == 0 {
				baseCold = append(baseCold, coldExec(b, ctx, base, id))
			}
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		c, r := cold.percentile(50), raw.percentile(50)
		b.ReportMetric(ms(c), "cold-p50-ms")
		b.ReportMetric(ms(r), "run-p50-ms")
		b.ReportMetric(float64(c)/float64(r), "cold/run-p50")
		b.ReportMetric(0, "ns/op")
		b.Logf("n=%d interleaved: cold start p50=%.2fms, raw runsc run p50=%.2fms, ratio %.2f", len(cold), ms(c), ms(r), float64(c)/float64(r))
		if base != nil {
			bc := baseCold.percentile(50)
			b.ReportMetric(ms(bc), "baseline-cold-p50-ms")
			b.ReportMetric(float64(bc)/float64(r), "baseline-cold/run-p50")
			b.Logf("baseline %s: cold start p50=%.2fms, ratio %.2f", os.Getenv("BENCH_BASELINE_BIN_DIR"), ms(bc), float64(bc)/float64(r))
		}
	})
}

// gvisorColdDaemons starts a daemon whose sandboxes are gVisor's with no
// network, and one of the build in BENCH_BASELINE_BIN_DIR (nil without).
func gvisorColdDaemons(b *testing.B) (d, base *testdaemon.Daemon) {
	args := append(gvisorArgs, "--default-network", "none")
	d = testdaemon.Start(b, testdaemon.Options{Args: args})
	if o, ok := baselineOptions(args); ok {
		base = testdaemon.Start(b, o)
	}
	return d, base
}

// coldExec is one cold start on d: the time to the answer of `exec true`
// on the new ID id, which is destroyed after it.
func coldExec(b *testing.B, ctx context.Context, d *testdaemon.Daemon, id string) time.Duration {
	start := time.Now()
	if res, err := d.Client.Sandbox(id).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
		b.Fatalf("exec: %v %+v", err, res)
	}
	took := time.Since(start)
	d.Client.Sandbox(id).Destroy(ctx)
	return took
}

// baselineOptions start a daemon of the build in BENCH_BASELINE_BIN_DIR,
// its own agent included (a daemon otherwise gets this build's), with
// args; false without BENCH_BASELINE_BIN_DIR.
func baselineOptions(args []string) (testdaemon.Options, bool) {
	dir := os.Getenv("BENCH_BASELINE_BIN_DIR")
	if dir == "" {
		return testdaemon.Options{}, false
	}
	return testdaemon.Options{
		Binary: filepath.Join(dir, "sandboxd"),
		Args:   append(append([]string(nil), args...), "--agent", filepath.Join(dir, "sandbox-agent")),
	}, true
}

// BenchmarkGVisorRuntimeRun is the baseline: `runsc run` of /usr/bin/true
// with the spec BenchmarkRuntimeRun gives crun and runc, and the flags the
// daemon uses.
func BenchmarkGVisorRuntimeRun(b *testing.B) {
	runsc := needRunsc(b)
	once(b, func(b *testing.B) {
		bundle := probeBundle(b)
		root := b.TempDir()
		b.Cleanup(func() { exec.Command("umount", "-l", filepath.Join(root, "null-netns")).Run() })
		s := measure(b, sampleCount(), func(i int) {
			id := fmt.Sprintf("gbench-%d-%d", os.Getpid(), i)
			out, err := exec.Command(runsc, "--root", root, "--platform=systrap", "--overlay2=none", "--host-uds=create",
				"run", "--bundle", bundle, id).CombinedOutput()
			if err != nil {
				b.Fatalf("runsc run: %v: %s", err, out)
			}
		})
		s.report(b)
	})
}

func fileExists(path string) bool { _, err := os.Stat(path); return err == nil }
