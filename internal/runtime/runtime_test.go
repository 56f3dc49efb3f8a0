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
	if _, err := New("crun", missing, root).State(ctx, "sandboxd-here"); err == nil || errors.Is(err, ErrNotExist) {
		t.Errorf("crun: state of sandboxd-here: %v, want the runtime asked (and failing to start)", err)
	}
}

// TestRunscStateWithoutStateFiles: runsc's state is files named after
// the container in its root; without them the container does not exist
// and runsc is not started to say so; with any of them (or a root that
// cannot be read) runsc is asked.
func TestRunscStateWithoutStateFiles(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	missing := filepath.Join(t.TempDir(), "no-such-runsc")
	r := NewGVisor(missing, root, "systrap")
	for _, f := range []string{"sandboxd-other_sandbox:sandboxd-other.state", "sandboxd-gone-2_sandbox:x.lock", "null-netns"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.State(ctx, "sandboxd-gone"); !errors.Is(err, ErrNotExist) {
		t.Errorf("state of a container without state files: %v, want ErrNotExist", err)
	}
	if err := r.Delete(ctx, "sandboxd-gone"); err != nil {
		t.Errorf("deleting a container without state files: %v", err)
	}
	if _, err := NewGVisor(missing, filepath.Join(root, "absent"), "systrap").State(ctx, "sandboxd-gone"); !errors.Is(err, ErrNotExist) {
		t.Errorf("state in a root that does not exist yet: %v, want ErrNotExist", err)
	}
	for id, file := range map[string]string{
		"sandboxd-here": "sandboxd-here_sandbox:sandboxd-here.state",
		"sandboxd-lock": "sandboxd-lock_sandbox:sandboxd-lock.lock",
		"sandboxd-sock": "runsc-sandboxd-sock.sock",
	} {
		if err := os.WriteFile(filepath.Join(root, file), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := r.State(ctx, id); err == nil || errors.Is(err, ErrNotExist) {
			t.Errorf("state of %s beside %s: %v, want runsc asked (and failing to start)", id, file, err)
		}
	}
}
