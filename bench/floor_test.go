package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkColdStartFloor splits a cold start's time over `crun run` into
// its parts (issue 19: sandboxd / crun run <= 1.2x), sample by sample in
// one run so that a loaded machine's drift hits every part alike. Each
// sample runs `crun run --detach` of the bundle a sandbox of this build
// really gets (its config.json, copied from a running sandbox, with a
// fresh overlay of the same host image, a cgroup of its own split as the
// daemon splits it, and a listening socket handed over as descriptor 3)
// with, as its process:
//
//	true:         /usr/bin/true (the runtime alone: until `crun run --detach` returns)
//	go:           a minimal static Go program (syscalls only) mounted where the agent is,
//	              answering one HTTP request on the socket (the Go runtime's start)
//	agent-health: the agent, until it answers GET /internal/health (the daemon's agent step)
//	agent-exec:   the agent, until its answer to a first POST /exec of `true` (a persistent
//	              shell started through the spawn wrapper, then the command)
//
// and beside them a sandboxd cold start of a new ID (`exec true`, as
// BenchmarkColdStart/none/no-userns, destroyed after its sample) and
// `crun run` of /usr/bin/true in BenchmarkRuntimeRun's minimal bundle (the
// goal's denominator), each from the state BenchmarkColdStart's samples
// start from (beforeColdSample).
// FLOOR_VARIANTS="true go ..." runs only those variants. With
// BENCH_BASELINE_BIN_DIR=DIR (another build's sandbox-agent,
// sandbox-spawn and sandbox-transpile, if it has one), agent-exec-baseline
// is agent-exec with that build's agent, wrapper and helper mounted instead: a change to the agent's start
// measured before and after, sample by sample (the two trade places every round: inTurn). Each variant also reports
// the CPU time its sandbox's cgroup used until the answer (crun's child
// once it joined the cgroup, the process, the boot shell): on a loaded
// host it moves far less than the wall time (<variant>-cpu-p50-ms); the
// sandboxd cold starts' CPU is logged as BenchmarkColdStart logs it.
func BenchmarkColdStartFloor(b *testing.B) {
	crun, err := exec.LookPath("crun")
	if err != nil {
		b.Skip("needs crun")
	}
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--userns=false"}})
		ctx := ctxFor(b)
		tmpl := floorTemplate(b, ctx, d)
		minimal := buildMinimalAgent(b)
		probe := probeBundle(b)
		root := b.TempDir()
		rt := runtime.New("crun", crun, root)
		host, err := cgroup.Detect()
		if err != nil {
			b.Fatal(err)
		}
		netns := fmt.Sprintf("sbdfloor%d", os.Getpid())
		if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
			b.Fatalf("ip netns add: %v: %s", err, out)
		}
		b.Cleanup(func() { exec.Command("ip", "netns", "delete", netns).Run() })
		exec.Command("ip", "-n", netns, "link", "set", "lo", "up").Run()
		f := &floor{b: b, ctx: ctx, rt: rt, host: host, tmpl: tmpl, minimal: minimal, netns: "/run/netns/" + netns,
			dir: b.TempDir(), parent: "/" + d.CgroupParent}

		variants := []string{"true", "go", "agent-health", "agent-exec"}
		f.baseline = os.Getenv("BENCH_BASELINE_BIN_DIR")
		if f.baseline != "" {
			variants = append(variants, "agent-exec-baseline")
		}
		if v := os.Getenv("FLOOR_VARIANTS"); v != "" {
			variants = strings.Fields(v)
		}
		started := map[string]samples{}  // until `crun run --detach` returned
		answered := map[string]samples{} // until the answer
		after := map[string]samples{}    // from the return to the answer
		cpu := map[string]samples{}      // the sandbox cgroup's CPU time until the answer
		var cold, crunRun samples
		var coldCPU coldStartCPU
		order := upTo(len(variants))
		this, base := slices.Index(variants, "agent-exec"), slices.Index(variants, "agent-exec-baseline")
		if this < 0 || base < 0 {
			this, base = 0, 0
		}
		for i := 0; i < sampleCount(); i++ {
			for _, k := range inTurn(i, order, this, base) {
				v := variants[k]
				r, a, c := f.sample(fmt.Sprintf("%d-%s", i, v), v)
				started[v] = append(started[v], r)
				cpu[v] = append(cpu[v], c)
				answered[v] = append(answered[v], a)
				after[v] = append(after[v], a-r)
			}
			id := fmt.Sprintf("floor-cold-%d", i)
			beforeColdSample()
			before := takeColdStartCPU(d)
			start := time.Now()
			if res, err := d.Client.Sandbox(id, client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone})).Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec: %v %+v", err, res)
			}
			cold = append(cold, time.Since(start))
			coldCPU.add(before, takeColdStartCPU(d))
			d.Client.Sandbox(id).Destroy(ctx)
			beforeColdSample()
			start = time.Now()
			rid := fmt.Sprintf("floor-run-%d-%d", os.Getpid(), i)
			if out, err := exec.Command(crun, "--root", root, "run", "--bundle", probe, rid).CombinedOutput(); err != nil {
				b.Fatalf("crun run: %v: %s", err, out)
			}
			crunRun = append(crunRun, time.Since(start))
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		for _, v := range variants {
			b.Logf("%-12s crun run --detach returned p50 %6.1f ms, answered p50 %6.1f ms (p25 %.1f, p75 %.1f), answered after the return p50 %.1f ms", v,
				ms(started[v].percentile(50)), ms(answered[v].percentile(50)), ms(answered[v].percentile(25)), ms(answered[v].percentile(75)),
				ms(after[v].percentile(50)))
			b.ReportMetric(ms(answered[v].percentile(50)), v+"-p50-ms")
		}
		for _, v := range variants {
			b.Logf("%-12s CPU time of the sandbox's cgroup until the answer p50 %.1f ms (p25 %.1f, p75 %.1f)", v,
				ms(cpu[v].percentile(50)), ms(cpu[v].percentile(25)), ms(cpu[v].percentile(75)))
			b.ReportMetric(ms(cpu[v].percentile(50)), v+"-cpu-p50-ms")
		}
		b.Logf("sandboxd cold start p50 %.1f ms; crun run (minimal bundle, true) p50 %.1f ms; boot steps p50: %s",
			ms(cold.percentile(50)), ms(crunRun.percentile(50)), bootSteps(d.Logs()))
		b.Logf("sandboxd cold start CPU: %s", coldCPU)
		b.ReportMetric(ms(cold.percentile(50)), "cold-p50-ms")
		b.ReportMetric(ms(crunRun.percentile(50)), "crun-run-p50-ms")
		b.ReportMetric(float64(len(cold)), "samples")
		b.ReportMetric(0, "ns/op")
	})
}

// floor runs the variants of BenchmarkColdStartFloor.
type floor struct {
	b       *testing.B
	ctx     context.Context
	rt      *runtime.Runtime
	host    *cgroup.Host
	tmpl    floorBundle
	minimal string
	netns   string
	dir     string
	parent  string
	// baseline is BENCH_BASELINE_BIN_DIR: another build's agent and wrapper.
	baseline string
}

// floorBundle is a running sandbox's spec and the host image it boots.
type floorBundle struct {
	spec   specs.Spec
	hostfs string
}

// floorTemplate starts two sandboxes (the second gets the seccomp filter
// the first compiled, as every later one does) and returns the second's
// spec and host image.
func floorTemplate(b *testing.B, ctx context.Context, d *testdaemon.Daemon) floorBundle {
	for _, id := range []string{"floor-tmpl-1", "floor-tmpl-2"} {
		if _, err := d.Client.Sandbox(id, client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone})).Exec(ctx, "true"); err != nil {
			b.Fatal(err)
		}
	}
	var tmpl floorBundle
	dirs, _ := filepath.Glob(filepath.Join(d.StateDir, "sandboxes", "*", "bundle", "config.json"))
	for _, path := range dirs {
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		var s specs.Spec
		if err := json.Unmarshal(data, &s); err != nil {
			b.Fatal(err)
		}
		if s.Annotations["run.oci.seccomp_bpf_data"] != "" && strings.HasSuffix(s.Annotations["dev.sandboxd.id"], "floor-tmpl-2") {
			tmpl.spec = s
		}
	}
	if tmpl.spec.Process == nil {
		b.Fatal("no sandbox spec with a precompiled seccomp filter")
	}
	versions, _ := filepath.Glob(filepath.Join(d.StateDir, "images", "hostfs", "*"))
	if len(versions) != 1 {
		b.Fatalf("want one host image version, found %q", versions)
	}
	tmpl.hostfs = versions[0]
	return tmpl
}

// sample runs one variant in a fresh bundle and returns how long
// `crun run --detach` took, how long until the answer, and the CPU time
// the sandbox's cgroup used until then.
func (f *floor) sample(name, variant string) (started, answered, cpu time.Duration) {
	b := f.b
	dir := filepath.Join(f.dir, name)
	ov := rootfs.Overlay{Layers: []string{f.tmpl.hostfs}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Target: filepath.Join(dir, "rootfs")}
	if err := ov.Mount(); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	defer ov.Unmount()
	cg := f.host.Group(f.parent + "/floor-" + name)
	cgMounts, err := cg.PrepareUser()
	if err != nil {
		b.Fatal(err)
	}
	defer cg.Remove()
	split := cgroup.UserLimits{MemoryBytes: 480 << 20, Pids: 240}
	if !cg.SplitNeedsInit() {
		if err := cg.Split(0, split); err != nil {
			b.Fatal(err)
		}
	}
	spec := f.tmpl.spec
	data, _ := json.Marshal(spec) // a deep copy
	spec = specs.Spec{}
	json.Unmarshal(data, &spec)
	spec.Root.Path = ov.Target
	spec.Linux.CgroupsPath = cg.Path
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = f.netns
		}
	}
	var mounts []specs.Mount
	for _, m := range spec.Mounts {
		if strings.HasPrefix(m.Destination, "/.sandboxd/cgroup/") {
			continue
		}
		switch {
		case m.Destination == runtime.AgentPath && variant == "go":
			m.Source = f.minimal
		case m.Destination == runtime.AgentPath && variant == "agent-exec-baseline":
			m.Source = filepath.Join(f.baseline, "sandbox-agent")
		case m.Destination == runtime.SpawnPath && variant == "agent-exec-baseline":
			m.Source = filepath.Join(f.baseline, "sandbox-spawn")
		case m.Destination == runtime.TranspilePath && variant == "agent-exec-baseline":
			// (A build from before the helper has none, and no use for it.)
			if helper := filepath.Join(f.baseline, "sandbox-transpile"); fileExists(helper) {
				m.Source = helper
			}
		}
		mounts = append(mounts, m)
	}
	spec.Mounts = append(mounts, cgMounts...)
	if variant == "true" {
		spec.Process.Args = []string{"/usr/bin/true"}
	}
	bundle := filepath.Join(dir, "bundle")
	os.MkdirAll(bundle, 0o700)
	data, _ = json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		b.Fatal(err)
	}
	sockPath := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sockPath)
	if err != nil {
		b.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false) // the copy goes on listening
	lnFile, err := ln.(*net.UnixListener).File()
	ln.Close()
	if err != nil {
		b.Fatal(err)
	}
	defer lnFile.Close()
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cid := fmt.Sprintf("floor-%d-%s", os.Getpid(), name)
	defer f.rt.Delete(context.Background(), cid)

	start := time.Now()
	pid, err := f.rt.Create(f.ctx, cid, bundle, runtime.CreateOptions{Log: logf, ExtraFiles: []*os.File{lnFile}, Start: !cg.SplitNeedsInit()})
	if err != nil {
		b.Fatal(err)
	}
	if cg.SplitNeedsInit() {
		if err := cg.Split(pid, split); err != nil {
			b.Fatal(err)
		}
		if err := f.rt.Start(f.ctx, cid); err != nil {
			b.Fatal(err)
		}
	}
	started = time.Since(start)
	switch variant {
	case "true":
		return started, started, groupCPU(f.host, cg)
	case "go":
		if err := rawHealth(sockPath); err != nil {
			b.Fatalf("minimal program: %v", err)
		}
	case "agent-health":
		if _, err := agentapi.NewClient(floorTransport(sockPath)).Health(f.ctx); err != nil {
			b.Fatalf("agent health: %v (log: %s)", err, readFile(logf.Name()))
		}
	case "agent-exec", "agent-exec-baseline":
		if err := agentExecTrue(f.ctx, sockPath); err != nil {
			b.Fatalf("agent exec: %v (log: %s)", err, readFile(logf.Name()))
		}
	}
	answered = time.Since(start)
	return started, answered, groupCPU(f.host, cg)
}

// groupCPU is the CPU time cg's processes have used so far (cgroup v2
// cpu.stat, or v1 cpuacct), 0 if unreadable.
func groupCPU(host *cgroup.Host, cg *cgroup.Group) time.Duration {
	if host.Unified != "" {
		return cgroupCPU(filepath.Join(host.Unified, cg.Path))
	}
	return cgroupCPU(filepath.Join("/sys/fs/cgroup/cpuacct", cg.Path))
}

func readFile(path string) string { data, _ := os.ReadFile(path); return string(data) }

func floorTransport(sock string) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}, DisableKeepAlives: true}
}

// rawHealth sends one GET and reads its answer's status line and headers.
func rawHealth(sock string) error {
	c, err := net.DialTimeout("unix", sock, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("GET " + agentapi.PathHealth + " HTTP/1.1\r\nHost: agent\r\n\r\n")); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// agentExecTrue is the daemon's forward of a first `exec true`.
func agentExecTrue(ctx context.Context, sock string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://agent/exec", strings.NewReader(`{"command":"true"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := floorTransport(sock).RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var res api.ExecResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK || res.ExitCode != 0 {
		return fmt.Errorf("status %d, %+v, %v", resp.StatusCode, res, err)
	}
	return nil
}

// minimalAgent answers one HTTP request on descriptor 3 with syscalls
// only: a Go runtime's start and nothing else.
const minimalAgent = `package main

import "syscall"

func main() {
	fd, _, err := syscall.Accept(3)
	if err != nil {
		syscall.Exit(1)
	}
	buf := make([]byte, 4096)
	var got []byte
	for {
		n, err := syscall.Read(fd, buf)
		if n <= 0 || err != nil {
			syscall.Exit(1)
		}
		got = append(got, buf[:n]...)
		if len(got) >= 4 && string(got[len(got)-4:]) == "\r\n\r\n" {
			break
		}
	}
	body := "{\"protocolVersion\":0}"
	syscall.Write(fd, []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n"+body))
	for {
		syscall.Pause()
	}
}
`

func buildMinimalAgent(b *testing.B) string {
	return buildStaticGo(b, "minimal", minimalAgent)
}

// buildStaticGo builds the one-file program src, statically, as name.
func buildStaticGo(b *testing.B, name, src string) string {
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+name+"\n\ngo 1.22\n"), 0o644)
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building the %s program: %v: %s", name, err, msg)
	}
	return out
}
