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
	rt, err := DetectGVisor(context.Background(), GVisorOptions{
		Path: path + "/runsc", StateRoot: t.TempDir(), ProbeDir: t.TempDir(),
	})
	if err != nil {
		t.Fatalf("DetectGVisor: %v", err)
	}
	t.Cleanup(rt.Close)
	if rt.Name != GVisor || rt.Platform() != "systrap" {
		t.Errorf("got runtime %s on platform %q, want gvisor on systrap", rt.Name, rt.Platform())
	}
}

func TestDetectGVisorWithoutRunsc(t *testing.T) {
	_, err := DetectGVisor(context.Background(), GVisorOptions{Path: "/nonexistent/runsc"})
	if err == nil {
		t.Fatal("DetectGVisor succeeded without runsc")
	}
}
