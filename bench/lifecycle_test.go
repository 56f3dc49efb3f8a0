package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// BenchmarkWake: a stopped (sleeping) sandbox's next `exec true`, from the
// call to its result: container, agent and shell started again on the
// sandbox's existing disk.
func BenchmarkWake(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{})
		ctx := ctxFor(b)
		sb := d.Client.Sandbox("sleeper")
		if _, err := sb.Exec(ctx, "echo data > /workspace/f"); err != nil {
			b.Fatal(err)
		}
		var s samples
		for i := 0; i < sampleCount(); i++ {
			if _, err := sb.Stop(ctx); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			res, err := sb.Exec(ctx, "true")
			if err != nil || res.ExitCode != 0 {
				b.Fatalf("wake exec: %v", err)
			}
			s = append(s, time.Since(start))
		}
		s.report(b)
	})
}

// BenchmarkSleepWakeCycle: 100 sandboxes cycling sleep and wake
// concurrently (10 at a time); every call must succeed.
func BenchmarkSleepWakeCycle(b *testing.B) {
	once(b, func(b *testing.B) {
		d := testdaemon.Start(b, testdaemon.Options{Args: []string{"--default-memory", "128Mi"}})
		ctx := ctxFor(b)
		const sandboxes, rounds, workers = 100, 3, 10
		var errs atomic.Int64
		var mu sync.Mutex
		var s samples
		jobs := make(chan int)
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					sb := d.Client.Sandbox(fmt.Sprintf("cycle-%d", i))
					for r := 0; r < rounds; r++ {
						t0 := time.Now()
						if _, err := sb.Exec(ctx, "echo $RANDOM >> /workspace/log"); err != nil {
							errs.Add(1)
							b.Logf("cycle-%d round %d exec: %v", i, r, err)
							continue
						}
						mu.Lock()
						s = append(s, time.Since(t0))
						mu.Unlock()
						if _, err := sb.Stop(ctx); err != nil {
							errs.Add(1)
							b.Logf("cycle-%d round %d stop: %v", i, r, err)
						}
					}
				}
			}()
		}
		for i := 0; i < sandboxes; i++ {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		b.ReportMetric(float64(errs.Load()), "errors")
		b.ReportMetric(time.Since(start).Seconds(), "total-s")
		s.report(b)
		if errs.Load() > 0 {
			b.Errorf("%d calls failed while cycling", errs.Load())
		}
	})
}
