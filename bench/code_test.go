package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// codeSandbox starts a daemon and a sandbox for the code benchmarks.
func codeSandbox(b *testing.B, id string) *client.Sandbox {
	b.Helper()
	d := testdaemon.Start(b, testdaemon.Options{})
	sb := d.Client.Sandbox(id)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := sb.Ensure(ctx); err != nil {
		b.Fatal(err)
	}
	return sb
}

func runOne(b *testing.B, sb *client.Sandbox, code string, o client.RunCodeOptions) *api.RunCodeResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := sb.RunCode(ctx, code, o)
	if err != nil {
		b.Fatal(err)
	}
	if res.Error != nil {
		b.Fatalf("%s: %s", res.Error.Name, res.Error.Value)
	}
	return res
}

// BenchmarkCodeRoundTrip is `1+1` in a warm context, through the whole
// path: SDK → daemon (auth, forward) → agent → driver → back, streamed.
// Target p50 ≤ 5 ms.
func BenchmarkCodeRoundTrip(b *testing.B) {
	for _, lang := range []api.CodeLanguage{api.LanguagePython, api.LanguageJavaScript} {
		b.Run(string(lang), func(b *testing.B) {
			once(b, func(b *testing.B) {
				sb := codeSandbox(b, "bench-rt-"+string(lang)[:2])
				o := client.RunCodeOptions{Language: lang}
				runOne(b, sb, "1+1", o) // the default context starts
				for range 10 {
					runOne(b, sb, "1+1", o)
				}
				s := measure(b, sampleCount(), func(int) {
					if res := runOne(b, sb, "1+1", o); res.Results[0].Text != "2" {
						b.Fatalf("1+1 = %q", res.Results[0].Text)
					}
				})
				s.report(b)
			})
		})
	}
}

// BenchmarkPythonContextCreate is the time from creating a Python context
// to its first result (`1+1`, numpy not imported). "cold" has no spare
// interpreter (each sample is the first context of its sandbox's agent
// after a delete of every context and the spare, so IPython starts from
// scratch); "warm" takes the spare the agent keeps once Python has been
// used. Target ≤ 300 ms.
func BenchmarkPythonContextCreate(b *testing.B) {
	b.Run("warm", func(b *testing.B) {
		once(b, func(b *testing.B) {
			sb := codeSandbox(b, "bench-ctx-warm")
			ctx := context.Background()
			var s samples
			for range max(sampleCount()/3, 20) + 1 {
				start := time.Now()
				c, err := sb.CreateCodeContext(ctx, client.CodeContextOptions{})
				if err != nil {
					b.Fatal(err)
				}
				runOne(b, sb, "1+1", client.RunCodeOptions{Context: c.ID})
				s = append(s, time.Since(start))
				if err := sb.DeleteCodeContext(ctx, c.ID); err != nil {
					b.Fatal(err)
				}
				// Let the agent start the next spare, as it does between
				// a user's calls (a create that comes sooner waits for it).
				time.Sleep(3 * time.Second)
			}
			// The first sample had no spare yet: it is a cold start.
			b.Logf("first (cold) sample: %s", s[0])
			s[1:].report(b)
		})
	})
	b.Run("fresh-env", func(b *testing.B) {
		once(b, func(b *testing.B) {
			sb := codeSandbox(b, "bench-ctx-cold")
			ctx := context.Background()
			n := max(sampleCount()/5, 10)
			s := measure(b, n, func(i int) {
				// A context with env of its own never takes the spare: this
				// is the cost of starting IPython.
				c, err := sb.CreateCodeContext(ctx, client.CodeContextOptions{Env: map[string]string{"N": fmt.Sprint(i)}})
				if err != nil {
					b.Fatal(err)
				}
				runOne(b, sb, "1+1", client.RunCodeOptions{Context: c.ID})
				if err := sb.DeleteCodeContext(ctx, c.ID); err != nil {
					b.Fatal(err)
				}
			})
			s.report(b)
		})
	})
}
