package bench

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkGVisorColdStartFloor sets a gVisor cold start (issue 12: at
// most 1.3x raw `runsc run`) against what any cold start of a sandbox with
// a Go agent and a shell must cost in gVisor on this host, sample by
// sample in one run. Each round runs, in turns, `runsc run` (the goal's
// flags and minimal bundle) of:
//
//	run:        /usr/bin/true, unpinned (the goal's denominator)
//	run-pinned: /usr/bin/true on one host CPU, as every sandbox of a
//	            1-CPU limit is (its cpuset, for an honest nproc)
//	go:         pinned, a minimal static Go program that exits at once
//	            (the Go runtime's start in gVisor)
//	bash:       pinned, `bash --noprofile --norc -c true` with LANG=C.UTF-8
//	            (a shell's start with the sandboxes' locale)
//	go-shell:   pinned, a minimal static Go program that starts that bash,
//	            writes it a line (`true; echo $?`) on a pipe and reads the
//	            answer: a Go agent that serves one command through a shell,
//	            without the daemon's transport or any of the agent's own work
//
// and a sandboxd cold start (`exec true` on a new ID, network none) as
// BenchmarkGVisorColdStartVsRuntimeRun takes it, with the baseline's too
// when BENCH_BASELINE_BIN_DIR is set. Reported: <variant>-p50-ms,
// <variant>/run-p50, cold/go-shell-p50, and <variant>-cpu-p50-ms, the CPU
// time of the sandbox's cgroup (Sentry, gofer, stubs, programs) until
// `runsc run` returned or the cold start's answer came, which a loaded
// host moves far less than the wall time. The raw variants include
// runsc's teardown after the program exits, which the cold start does not
// wait for; so go-shell/run is a floor of cold/run that only less work in
// gVisor (another host, another runtime) moves.
func BenchmarkGVisorColdStartFloor(b *testing.B) {
	runsc := needRunsc(b)
	once(b, func(b *testing.B) {
		d, base := gvisorColdDaemons(b)
		ctx := ctxFor(b)
		prog := buildStaticGo(b, "floorshell", floorShell)
		cpus := []string{"0", "1"}
		bundles := map[string]string{}
		for _, cpu := range cpus {
			bundles["run-pinned"+cpu] = floorRunBundle(b, cpu, nil, "/usr/bin/true")
			bundles["go"+cpu] = floorRunBundle(b, cpu, &prog, "/.floor", "exit")
			bundles["bash"+cpu] = floorRunBundle(b, cpu, nil, "/bin/bash", "--noprofile", "--norc", "-c", "true")
			bundles["go-shell"+cpu] = floorRunBundle(b, cpu, &prog, "/.floor")
		}
		bundles["run"] = probeBundle(b)
		// Every raw sandbox's cgroup is a child of rawParent, whose CPU
		// time, charged up the hierarchy, outlives the child runsc
		// removes: the raw run's sandbox CPU is its growth over the run.
		rawParent := fmt.Sprintf("sbdgvfloor%d", os.Getpid())
		for name, bundle := range bundles {
			setCgroupsPath(b, bundle, "/"+rawParent+"/"+name)
		}
		// A new cgroup v1 cpuset has no CPUs, and runsc pins the
		// leaf below it only when the parent has some: it gets the
		// root's.
		if cpuset := "/sys/fs/cgroup/cpuset"; fileExists(filepath.Join(cpuset, "cpuset.cpus")) {
			dir := filepath.Join(cpuset, rawParent)
			os.Mkdir(dir, 0o755)
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				data, err := os.ReadFile(filepath.Join(cpuset, f))
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, f), data, 0o644)
				}
				if err != nil {
					b.Fatalf("preparing the raw runs' cpuset: %v", err)
				}
			}
		}
		b.Cleanup(func() {
			dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", rawParent))
			for _, dir := range append(dirs, filepath.Join("/sys/fs/cgroup", rawParent)) {
				os.Remove(dir)
			}
		})
		root := b.TempDir()
		b.Cleanup(func() { exec.Command("umount", "-l", filepath.Join(root, "null-netns")).Run() })
		runRaw := func(bundle, id string) (took, cpu time.Duration) {
			before, start := cgroupParentCPU(rawParent), time.Now()
			out, err := exec.Command(runsc, "--root", root, "--platform=systrap", "--overlay2=none", "--host-uds=create",
				"run", "--bundle", bundle, id).CombinedOutput()
			if err != nil {
				b.Fatalf("runsc run %s: %v: %s", bundle, err, out)
			}
			return time.Since(start), cgroupParentCPU(rawParent) - before
		}
		// coldCPU is coldExec with the CPU time its sandbox used until
		// the answer (its cgroup is the daemon's parent's only child).
		coldCPU := func(d *testdaemon.Daemon, id string) (took, cpu time.Duration) {
			before, start := cgroupParentCPU(d.CgroupParent), time.Now()
			if res, err := d.Client.Sandbox(id).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, res)
			}
			took, cpu = time.Since(start), cgroupParentCPU(d.CgroupParent)-before
			d.Client.Sandbox(id).Destroy(ctx)
			return took, cpu
		}
		variants := []string{"run", "run-pinned", "go", "bash", "go-shell", "cold"}
		if base != nil {
			variants = append(variants, "baseline-cold")
		}
		got, cpuOf := map[string]samples{}, map[string]samples{}
		for i := 0; i < sampleCount(); i++ {
			cpu := cpus[i%len(cpus)]
			// A fresh order every round (the same in every run): a
			// variant's place, and what ran before it, weigh on its
			// time on a loaded host (bench/results/gvisor.txt).
			for _, k := range rand.New(rand.NewPCG(uint64(i), 12)).Perm(len(variants)) {
				v := variants[k]
				id := fmt.Sprintf("gfloor-%d-%d", os.Getpid(), i)
				var took, used time.Duration
				switch v {
				case "cold":
					took, used = coldCPU(d, id)
				case "baseline-cold":
					took, used = coldCPU(base, id)
				case "run":
					took, used = runRaw(bundles[v], id+"-"+v)
				default:
					took, used = runRaw(bundles[v+cpu], id+"-"+v)
				}
				got[v], cpuOf[v] = append(got[v], took), append(cpuOf[v], used)
			}
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		run, runCPU := got["run"].percentile(50), cpuOf["run"].percentile(50)
		var line, cpuLine []string
		for _, v := range variants {
			p, c := got[v].percentile(50), cpuOf[v].percentile(50)
			b.ReportMetric(ms(p), v+"-p50-ms")
			b.ReportMetric(ms(c), v+"-cpu-p50-ms")
			if v != "run" {
				b.ReportMetric(float64(p)/float64(run), v+"/run-p50")
			}
			line = append(line, fmt.Sprintf("%s %.1f (%.2fx)", v, ms(p), float64(p)/float64(run)))
			cpuLine = append(cpuLine, fmt.Sprintf("%s %.1f (%.2fx)", v, ms(c), float64(c)/float64(max(runCPU, 1))))
		}
		cold, floor := got["cold"].percentile(50), got["go-shell"].percentile(50)
		b.ReportMetric(float64(cold)/float64(floor), "cold/go-shell-p50")
		b.ReportMetric(float64(len(got["run"])), "samples")
		b.ReportMetric(0, "ns/op")
		b.Logf("n=%d interleaved, p50 ms (x raw runsc run): %s", len(got["run"]), strings.Join(line, ", "))
		b.Logf("the sandbox's CPU time p50 ms (x raw runsc run's): %s", strings.Join(cpuLine, ", "))
		b.Logf("cold start beyond the go-shell floor: %.1f ms (%.2fx the floor)", ms(cold-floor), float64(cold)/float64(floor))
	})
}

// floorRunBundle is probeBundle's bundle pinned to cpu, with prog (if not
// nil) bound read-only at /.floor and args as its process.
func floorRunBundle(b *testing.B, cpu string, prog *string, args ...string) string {
	bundle := probeBundle(b)
	editSpec(b, bundle, func(spec *specs.Spec) {
		spec.Process.Args = args
		spec.Process.Env = []string{"PATH=/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8"}
		spec.Linux.Resources.CPU.Cpus = cpu
		if prog != nil {
			if err := os.WriteFile(filepath.Join(spec.Root.Path, ".floor"), nil, 0o755); err != nil {
				b.Fatal(err)
			}
			spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/.floor", Type: "bind", Source: *prog, Options: []string{"bind", "ro"}})
		}
	})
	return bundle
}

// editSpec rewrites the bundle's config.json with edit applied.
func editSpec(b *testing.B, bundle string, edit func(*specs.Spec)) {
	path := filepath.Join(bundle, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		b.Fatal(err)
	}
	edit(&spec)
	if data, err = json.Marshal(spec); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
}

// floorShell exits at once when its first argument is "exit"; else it
// starts bash on a pipe, has it run `true` and report the status, and
// exits when bash has: the least a Go agent does for a first command.
const floorShell = `package main

import (
	"os"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "exit" {
		return
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		os.Exit(2)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		os.Exit(2)
	}
	p, err := os.StartProcess("/bin/bash", []string{"bash", "--noprofile", "--norc"}, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{inR, outW, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		os.Exit(3)
	}
	inR.Close()
	outW.Close()
	inW.Write([]byte("true; echo $?\n"))
	buf := make([]byte, 16)
	n, _ := outR.Read(buf)
	if string(buf[:n]) != "0\n" {
		os.Exit(4)
	}
	inW.Close()
	p.Wait()
}
`

// setCgroupsPath gives the bundle's sandbox the cgroup path.
func setCgroupsPath(b *testing.B, bundle, path string) {
	editSpec(b, bundle, func(spec *specs.Spec) { spec.Linux.CgroupsPath = path })
}
