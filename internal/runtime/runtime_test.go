package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestStateWithoutStateDirectory: for crun and runc, a container whose
// state directory is absent does not exist, and no runtime process is
// started to say so (the binary here cannot run); with the directory
// there, or for runsc, the runtime is asked.
func TestStateWithoutStateDirectory(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	missing := filepath.Join(t.TempDir(), "no-such-runtime")
	for _, name := range []string{"crun", "runc"} {
		r := New(name, missing, root)
		if _, err := r.State(ctx, "sandboxd-gone"); !errors.Is(err, ErrNotExist) {
			t.Errorf("%s: state of a container without a state directory: %v, want ErrNotExist", name, err)
		}
		if err := r.Delete(ctx, "sandboxd-gone"); err != nil {
			t.Errorf("%s: deleting a container without a state directory: %v", name, err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "sandboxd-here"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Runtime{New("crun", missing, root), {Name: GVisor, Path: missing, rc: New("", missing, root).rc}} {
		for _, id := range []string{"sandboxd-here", "sandboxd-gone"} {
			if r.Name != GVisor && id == "sandboxd-gone" {
				continue
			}
			if _, err := r.State(ctx, id); err == nil || errors.Is(err, ErrNotExist) {
				t.Errorf("%s: state of %s: %v, want the runtime asked (and failing to start)", r.Name, id, err)
			}
		}
	}
}
