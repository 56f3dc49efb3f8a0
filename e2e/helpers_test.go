package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

func daemon(t *testing.T) *testdaemon.Daemon {
	t.Helper()
	testdaemon.SkipUnlessRoot(t)
	return testdaemon.Start(t, testdaemon.Options{})
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// run executes cmd and fails the test unless it exits 0; it returns
// stdout.
func run(t *testing.T, sb *client.Sandbox, cmd string, opts ...client.ExecOption) string {
	t.Helper()
	res, err := sb.Exec(ctxT(t, 60*time.Second), cmd, opts...)
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d\nstdout: %s\nstderr: %s", cmd, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// exitOf executes cmd and returns its exit code and combined output.
func exitOf(t *testing.T, sb *client.Sandbox, cmd string) (int, string) {
	t.Helper()
	res, err := sb.Exec(ctxT(t, 60*time.Second), cmd)
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	return res.ExitCode, res.Stdout + res.Stderr
}

func trim(s string) string { return strings.TrimSpace(s) }

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
