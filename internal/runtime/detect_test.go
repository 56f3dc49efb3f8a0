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
