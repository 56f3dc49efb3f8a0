package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// clusterGateway is set while TestClusterCore runs the core tests against
// a cluster: daemon and forEachRuntime hand out its gateway instead of
// starting a daemon, so the same test bodies run through a gateway.
var clusterGateway *testdaemon.Daemon

func daemon(t *testing.T) *testdaemon.Daemon {
	t.Helper()
	testdaemon.SkipUnlessRoot(t)
	if clusterGateway != nil {
		return clusterGateway
	}
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

// runtimes lists the runtimes the core tests run on: the one the daemon
// picks for the host's kernel (crun, else runc) and, when runsc was built
// beside sandboxd (make build always builds it), gvisor.
func runtimes(t *testing.T) []string {
	rts := []string{"host-kernel"}
	if _, err := os.Stat(filepath.Join(testdaemon.BinDir(t), "runsc")); err == nil {
		rts = append(rts, "gvisor")
	}
	return rts
}

// forEachRuntime runs fn once per runtime, as a subtest named after it,
// each with its own daemon whose default runtime it is: every sandbox the
// test makes runs on that runtime. Under TestClusterCore it runs fn once,
// against the cluster's gateway.
func forEachRuntime(t *testing.T, fn func(t *testing.T, d *testdaemon.Daemon), extraArgs ...string) {
	testdaemon.SkipUnlessRoot(t)
	if clusterGateway != nil {
		// The cluster's nodes run the host's runtime.
		t.Run("cluster", func(t *testing.T) { fn(t, clusterGateway) })
		return
	}
	for _, rt := range runtimes(t) {
		t.Run(rt, func(t *testing.T) {
			args := append([]string{}, extraArgs...)
			if rt == "gvisor" {
				args = append(args, "--default-runtime", "gvisor")
			}
			fn(t, testdaemon.Start(t, testdaemon.Options{Args: args}))
		})
	}
}

// onGVisor reports whether t is (or is below) a forEachRuntime subtest on
// gVisor.
func onGVisor(t *testing.T) bool { return strings.Contains(t.Name()+"/", "/gvisor/") }
