package runtime

import (
	"context"
	"os/exec"
	"testing"
	"time"

	runc "github.com/containerd/go-runc"
)

// TestPollerMonitor: go-runc's commands are waited for in the poller: the
// exit status comes back, a command that runs a while is waited for, and
// one whose context ends is killed and reaped.
func TestPollerMonitor(t *testing.T) {
	if _, ok := runc.Monitor.(pollerMonitor); !ok {
		t.Fatalf("runc.Monitor is %T, want pollerMonitor", runc.Monitor)
	}
	run := func(ctx context.Context, script string) (int, time.Duration) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "sh", "-c", script)
		start := time.Now()
		ec, err := runc.Monitor.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		status, err := runc.Monitor.Wait(cmd, ec)
		if err != nil {
			t.Fatal(err)
		}
		if cmd.ProcessState == nil {
			t.Errorf("%q was not reaped", script)
		}
		return status, time.Since(start)
	}
	if status, _ := run(context.Background(), "exit 3"); status != 3 {
		t.Errorf("status %d, want 3", status)
	}
	if status, took := run(context.Background(), "sleep 0.2"); status != 0 || took < 150*time.Millisecond {
		t.Errorf("sleep 0.2: status %d after %s", status, took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if status, took := run(ctx, "sleep 30"); status == 0 || took > 10*time.Second {
		t.Errorf("a cancelled sleep 30: status %d after %s", status, took)
	}
}
