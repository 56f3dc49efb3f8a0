package runtime

import (
	"context"
	"log/slog"
	"os"
	"testing"
)

func TestDetectFindsAWorkingRuntime(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: runs a real probe container")
	}
	for _, want := range []string{"auto", "crun", "runc"} {
		t.Run(want, func(t *testing.T) {
			rt, err := Detect(context.Background(), DetectOptions{
				Want: want, StateRoot: t.TempDir(), ProbeDir: t.TempDir(), Log: slog.Default(),
			})
			if err != nil {
				t.Fatalf("Detect(%s): %v", want, err)
			}
			if want != "auto" && rt.Name != want {
				t.Errorf("Detect(%s) chose %s", want, rt.Name)
			}
		})
	}
}

func TestDetectRejectsUnknownRuntime(t *testing.T) {
	if _, err := Detect(context.Background(), DetectOptions{Want: "docker", Log: slog.Default()}); err == nil {
		t.Fatal("Detect(docker) succeeded")
	}
}

func TestDetectGVisorRunsAProbeContainer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: runs a real probe container")
	}
	path := os.Getenv("SANDBOXD_BIN_DIR")
	if path == "" {
		t.Skip("SANDBOXD_BIN_DIR is not set: run through make test, which builds bin/runsc")
	}
	// auto picks systrap; --gvisor-platform ptrace (which also works on
	// this kind of host) runs the probe container on ptrace.
	for _, tt := range []struct{ ask, want string }{{"auto", "systrap"}, {"ptrace", "ptrace"}} {
		t.Run(tt.ask, func(t *testing.T) {
			rt, err := DetectGVisor(context.Background(), GVisorOptions{
				Path: path + "/runsc", Platform: tt.ask, StateRoot: t.TempDir(), ProbeDir: t.TempDir(),
			})
			if err != nil {
				t.Fatalf("DetectGVisor(%s): %v", tt.ask, err)
			}
			t.Cleanup(rt.Close)
			if rt.Name != GVisor || rt.Platform() != tt.want {
				t.Errorf("got runtime %s on platform %q, want gvisor on %s", rt.Name, rt.Platform(), tt.want)
			}
		})
	}
}

func TestDetectGVisorWithoutRunsc(t *testing.T) {
	_, err := DetectGVisor(context.Background(), GVisorOptions{Path: "/nonexistent/runsc"})
	if err == nil {
		t.Fatal("DetectGVisor succeeded without runsc")
	}
}
