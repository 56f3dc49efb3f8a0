package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeUserNSNeverFallsBackSilently: whenever new sandboxes will run
// without user namespaces (turned off, a runtime other than crun, a kernel
// or state directory where the probe fails), the daemon says so in one log
// line naming why, and the answer is false.
func TestProbeUserNSNeverFallsBackSilently(t *testing.T) {
	// A state directory whose probe cannot even make its scratch
	// directory: a regular file stands where the directory would be.
	notADir := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(notADir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     Config
		runtime string
		want    []string
	}{
		{"turned off", Config{UserNS: false, StateDir: t.TempDir()}, "crun",
			[]string{"level=INFO", "user namespaces are off (--userns=false)"}},
		{"runc", Config{UserNS: true, UserNSBase: 1_000_000, StateDir: t.TempDir()}, "runc",
			[]string{"level=WARN", "user namespaces unavailable", "they need crun", "runc"}},
		{"the probe fails", Config{UserNS: true, UserNSBase: 1_000_000, StateDir: notADir}, "crun",
			[]string{"level=WARN", "user namespaces unavailable on this host", "err="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			if probeUserNS(tt.cfg, tt.runtime, log) {
				t.Fatal("probeUserNS = true, want false")
			}
			out := buf.String()
			if n := strings.Count(out, "\n"); n != 1 {
				t.Errorf("%d log lines, want one:\n%s", n, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("log %q lacks %q", out, w)
				}
			}
		})
	}
}
