package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/runtime"
)

// transpilerMarker is a file a gVisor checkpoint's image directory holds
// when the checkpointed sandbox had the TypeScript helper mounted
// (runtime.TranspilePath).
//
// Why: runsc restores a checkpoint only into a spec with the same mounts
// as the checkpointed one's, so a sandbox paused, or a memory snapshot
// taken, by a daemon from before the helper must be restored without it
// (its agent still links the transpiler), and one taken with it, with it.
const transpilerMarker = "sandboxd-transpile"

// mountsTranspiler reports whether b's next start mounts the TypeScript
// helper: always, unless it restores a gVisor checkpoint made without it.
func (m *Manager) mountsTranspiler(b *box, p paths) bool {
	if m.opts.TranspilePath == "" {
		return false
	}
	image := m.restoreImage(b, p)
	if image == "" {
		return true
	}
	_, err := os.Stat(filepath.Join(image, transpilerMarker))
	return err == nil
}

// restoreImage is the checkpoint image b's next start restores: a fork's
// snapshot's memory on its first start, a paused sandbox's checkpoint; ""
// for a start from files.
func (m *Manager) restoreImage(b *box, p paths) string {
	switch {
	case !b.isGVisor():
		return ""
	case m.forkRestores(b):
		return m.opts.Snapshots.MemoryPath(b.cfg.Snapshot)
	case b.state() == StatusPaused:
		return checkpointDir(p)
	}
	return ""
}

// markTranspiler leaves transpilerMarker in a checkpoint's image directory
// when the sandbox checkpointed from bundle had the helper mounted.
func markTranspiler(bundle, image string) error {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return err
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	for _, mnt := range spec.Mounts {
		if mnt.Destination == runtime.TranspilePath {
			return os.WriteFile(filepath.Join(image, transpilerMarker), nil, 0o600)
		}
	}
	return nil
}
