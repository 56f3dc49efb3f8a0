package bench

import (
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
// issue's "resume to first exec result" (goal <= 150 ms).
func BenchmarkGVisorPauseResume(b *testing.B) {
	needRunsc(b)
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: append(gvisorArgs, "--warm-pool", "0", "--default-network", "none")})
		ctx := ctxFor(b)
		sb := d.Client.Sandbox("gpause")
		// 200 MiB of touched memory in a background process.
		if _, err := sb.Exec(ctx, `nohup python3 -c 'import time; b = bytearray(200 << 20); b[::4096] = b"x" * len(b[::4096]); time.sleep(86400)' >/dev/null 2>&1 &`); err != nil {
			b.Fatal(err)
		}
		time.Sleep(3 * time.Second) // the process fills its memory
		n := sampleCount()
		var pause, resume samples
		for i := 0; i < n; i++ {
			start := time.Now()
			if _, err := sb.Pause(ctx, client.PauseOptions{}); err != nil {
				b.Fatalf("pause: %v", err)
			}
			pause = append(pause, time.Since(start))
			start = time.Now()
			if res, err := sb.Exec(ctx, "true"); err != nil || res.ExitCode != 0 {
				b.Fatalf("exec after pause: %v %+v", err, res)
			}
			resume = append(resume, time.Since(start))
		}
		if res, err := sb.Exec(ctx, "pgrep -f bytearray >/dev/null"); err != nil || res.ExitCode != 0 {
			b.Errorf("the Python process did not survive the pauses: %v %+v", err, res)
		}
		b.Run("pause", func(b *testing.B) { pause.report(b) })
		b.Run("resume", func(b *testing.B) { resume.report(b) })
	})
}
