package bench

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkGVisorPauseResume: pause (checkpoint to disk) and resume of a
// gVisor sandbox running a Python process that holds 200 MiB, one sample
// of each in turn. pause is the whole POST .../pause (agent suspended,
// memory saved, container down); resume is the next call's result,
// `exec true`, from a paused sandbox (restore, agent back, exec): the
// issue's "resume to first exec result" (goal <= 150 ms). The resume
// sub-benchmark also logs the p50 of each step of the restore as the
// daemon times them (restore = runsc restore into the container created
// ahead, signal = runsc kill to the agent, agent = its socket back and
// answering; network, overlay, bundle and create = runsc restore from
// nothing when there is no such container), and the pause one those of the
// pause (suspend, checkpoint, record) and of what follows it in the
// background (teardown, prepare = the container created ahead). Each
// resume is timed once that background work is done (waitSettled).
//
// With BENCH_BASELINE_BIN_DIR=DIR (a directory holding another build's
// sandboxd, say main's before a change), that daemon runs beside this
// one and the two are sampled in turn, alternating which goes first, and
// reported as baseline-pause and baseline-resume: a before/after
// comparison that a loaded machine's drift hits alike.
func BenchmarkGVisorPauseResume(b *testing.B) {
	needRunsc(b)
	once(b, func(b *testing.B) {
		ctx := ctxFor(b)
		type side struct {
			name          string
			d             *testdaemon.Daemon
			sb            *client.Sandbox
			pause, resume samples
		}
		sides := []*side{{name: ""}}
		if dir := os.Getenv("BENCH_BASELINE_BIN_DIR"); dir != "" {
			sides = append(sides, &side{name: "baseline-"})
		}
		for _, s := range sides {
			o := testdaemon.Options{Args: append(gvisorArgs, "--warm-pool", "0", "--default-network", "none")}
			if s.name != "" {
				// The baseline's own agent: a build's daemon refuses another protocol's.
				dir := os.Getenv("BENCH_BASELINE_BIN_DIR")
				o.Binary = filepath.Join(dir, "sandboxd")
				o.Args = append(o.Args, "--agent", filepath.Join(dir, "sandbox-agent"))
			}
			s.d = testdaemon.Start(b, o)
			s.sb = s.d.Client.Sandbox("gpause")
			holdMemory(ctx, b, s.sb)
		}
		n := sampleCount()
		for i := 0; i < n; i++ {
			for j := range sides {
				s := sides[(i+j)%len(sides)]
				start := time.Now()
				if _, err := s.sb.Pause(ctx, client.PauseOptions{}); err != nil {
					b.Fatalf("%spause: %v", s.name, err)
				}
				s.pause = append(s.pause, time.Since(start))
				waitSettled(b, s.d, len(s.pause))
				start = time.Now()
				if res, err := s.sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
					b.Fatalf("%sexec after pause: %v %+v", s.name, err, res)
				}
				s.resume = append(s.resume, time.Since(start))
			}
		}
		for _, s := range sides {
			if res, err := s.sb.Exec(ctx, "pgrep -f bytearray >/dev/null"); err != nil || res.ExitCode != 0 {
				b.Errorf("%s: the Python process did not survive the pauses: %v %+v", s.name, err, res)
			}
		}
		for _, s := range sides {
			logs := s.d.Logs()
			b.Run(s.name+"pause", func(b *testing.B) {
				s.pause.report(b)
				b.Logf("pause steps p50: %s", stepMedians(logs, `msg="sandbox paused" sandbox=gpause`, 0))
				b.Logf("after the pause, in the background, p50: %s", stepMedians(logs, `msg="paused sandbox settled" sandbox=gpause`, 0))
			})
			b.Run(s.name+"resume", func(b *testing.B) {
				s.resume.report(b)
				// The first boot is the sandbox's creation.
				b.Logf("resume steps p50: %s", stepMedians(logs, `msg="sandbox boot" sandbox=gpause`, 1))
			})
		}
	})
}

// waitSettled waits until the daemon has finished its n-th pause in the
// background (the stopped container torn down and the next one created,
// internal/sandbox/resume.go), so that the resume measured is that of a
// sandbox paused for a while; a resume right after a pause waits for that
// work first. A daemon that does not do it (a baseline build from before)
// is not waited for.
func waitSettled(b *testing.B, d *testdaemon.Daemon, n int) {
	const settled = `msg="paused sandbox settled" sandbox=gpause`
	deadline := time.Now().Add(2 * time.Minute)
	for {
		logs := d.Logs()
		if strings.Count(logs, settled) >= n {
			return
		}
		if !strings.Contains(logs, "paused sandbox settled") && strings.Contains(logs, "teardown=") {
			return // a build that tears down before it answers
		}
		if time.Now().After(deadline) {
			b.Fatalf("pause %d did not settle", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// holdMemory starts a Python process that holds 200 MiB of touched memory
// in the background and waits until it has touched all of it (under gVisor
// on a loaded machine that takes seconds).
func holdMemory(ctx context.Context, b *testing.B, sb *client.Sandbox) {
	b.Helper()
	if _, err := sb.Exec(ctx, `nohup python3 -c 'import time; b = bytearray(200 << 20); b[::4096] = b"x" * len(b[::4096]); open("/tmp/held", "w").close(); time.sleep(86400)' >/dev/null 2>&1 &`); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		res, err := sb.Exec(ctx, "test -e /tmp/held")
		if err == nil && res.ExitCode == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the Python process did not fill its memory: %v %+v", err, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var stepsField = regexp.MustCompile(`steps="([^"]*)"`)

// stepMedians is the p50 of each step in the steps="a=1ms b=2ms" field of
// the daemon's log lines that contain match, skipping the first skip.
func stepMedians(logs, match string, skip int) string {
	var order []string
	byStep := map[string]samples{}
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, match) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		m := stepsField.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		for _, kv := range strings.Fields(m[1]) {
			k, v, _ := strings.Cut(kv, "=")
			d, err := time.ParseDuration(v)
			if err != nil {
				continue
			}
			if !slices.Contains(order, k) {
				order = append(order, k)
			}
			byStep[k] = append(byStep[k], d)
		}
	}
	var out []string
	for _, k := range order {
		out = append(out, k+"="+byStep[k].percentile(50).Round(100*time.Microsecond).String())
	}
	return strings.Join(out, " ")
}
