package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/store"
)

// TestTranspilerMountFollowsTheCheckpoint: every start mounts the
// TypeScript helper, except a gVisor restore of a checkpoint made without
// it (runsc refuses a restore whose mounts differ from the checkpoint's).
func TestTranspilerMountFollowsTheCheckpoint(t *testing.T) {
	m := &Manager{opts: Options{StateDir: t.TempDir(), RunDir: t.TempDir(), TranspilePath: "/run/x/transpile/sandbox-transpile-1"}}
	box := func(runtime string, status Status) *box {
		return &box{rec: store.Sandbox{Key: "k", Status: string(status)}, cfg: Config{Runtime: runtime}}
	}
	p := m.paths("k")
	writeBundle := func(mounts ...string) {
		var s specs.Spec
		for _, d := range mounts {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: d})
		}
		data, _ := json.Marshal(s)
		os.MkdirAll(p.bundle, 0o700)
		if err := os.WriteFile(filepath.Join(p.bundle, "config.json"), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	image := checkpointDir(p)
	os.MkdirAll(image, 0o700)

	if !m.mountsTranspiler(box("crun", StatusPaused), p) || !m.mountsTranspiler(box(RuntimeGVisor, StatusStopped), p) {
		t.Error("a start from files does not mount the helper")
	}
	writeBundle(runtime.AgentPath)
	if err := markTranspiler(p.bundle, image); err != nil {
		t.Fatal(err)
	}
	if m.mountsTranspiler(box(RuntimeGVisor, StatusPaused), p) {
		t.Error("a checkpoint made without the helper is restored with it")
	}
	writeBundle(runtime.AgentPath, runtime.TranspilePath)
	if err := markTranspiler(p.bundle, image); err != nil {
		t.Fatal(err)
	}
	if !m.mountsTranspiler(box(RuntimeGVisor, StatusPaused), p) {
		t.Error("a checkpoint made with the helper is restored without it")
	}
	m.opts.TranspilePath = ""
	if m.mountsTranspiler(box("crun", StatusCreating), p) {
		t.Error("a daemon without the helper mounts it")
	}
}
