package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sort"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/volume"
)

// Volumes is what the manager needs of the volume store.
type Volumes interface {
	Exists(name string) bool
	// Mount makes sure the volume is mounted on the host and returns
	// where.
	Mount(ctx context.Context, name string) (string, error)
}

// VolumeMount is a named volume at a path of the sandbox.
type VolumeMount struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// ErrVolumeNotFound: a sandbox names a volume that does not exist.
var ErrVolumeNotFound = errors.New("volume not found")

// maxVolumeMounts bounds the volumes of one sandbox.
const maxVolumeMounts = 8

// checkVolumes validates a configuration's volumes: names, paths (the
// rules of bucket mounts), no two at overlapping paths.
func checkVolumes(vols []VolumeMount) error {
	if len(vols) > maxVolumeMounts {
		return invalid("at most %d volumes", maxVolumeMounts)
	}
	for i, v := range vols {
		if err := volume.ValidateName(v.Name); err != nil {
			return invalid("volume %q: 1-63 characters of a-z, 0-9, '_', '.' and '-'", v.Name)
		}
		if err := ValidateMountPath(v.Path); err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		for _, w := range vols[:i] {
			if overlaps(v.Path, w.Path) {
				return fmt.Errorf("%w: volumes %s and %s at overlapping paths %s and %s", ErrMountPathInUse, w.Name, v.Name, w.Path, v.Path)
			}
		}
	}
	return nil
}

// checkVolumesExist makes sure every volume a new sandbox names exists.
func (m *Manager) checkVolumesExist(vols []VolumeMount) error {
	for _, v := range vols {
		if m.opts.Volumes == nil || !m.opts.Volumes.Exists(v.Name) {
			return fmt.Errorf("%w: %s", ErrVolumeNotFound, v.Name)
		}
	}
	return nil
}

// volumeMounts are the bind mounts of b's volumes for its OCI spec; the
// runtime creates missing mount points inside the sandbox's root.
func (m *Manager) volumeMounts(ctx context.Context, b *box) ([]specs.Mount, error) {
	var out []specs.Mount
	for _, v := range b.cfg.Volumes {
		if m.opts.Volumes == nil {
			return nil, fmt.Errorf("%w: %s", ErrVolumeNotFound, v.Name)
		}
		host, err := m.opts.Volumes.Mount(ctx, v.Name)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		mode := "rw"
		if v.ReadOnly {
			mode = "ro"
		}
		opts := []string{"bind", mode, "nosuid", "nodev"}
		if b.hostIDs() != nil {
			// One volume, many sandboxes with different ID ranges: the
			// runtime idmaps the mount, so each sandbox's root is the
			// volume's root (host 0) and what it writes is stored as such.
			opts = append(opts, "idmap")
		}
		out = append(out, specs.Mount{Destination: v.Path, Type: "bind", Source: host, Options: opts})
	}
	return out, nil
}

// VolumeUsers returns the IDs of the sandboxes, sorted, whose configuration names
// volume name (running or not: a sleeping one mounts it when it wakes).
func (m *Manager) VolumeUsers(name string) []string {
	m.mu.Lock()
	boxes := make([]*box, 0, len(m.boxes))
	for _, b := range m.boxes {
		boxes = append(boxes, b)
	}
	m.mu.Unlock()
	var ids []string
	for _, b := range boxes {
		b.mu.Lock()
		if !b.destroyed && b.rec.ID != "" {
			for _, v := range b.cfg.Volumes {
				if v.Name == name {
					ids = append(ids, b.id)
					break
				}
			}
		}
		b.mu.Unlock()
	}
	sort.Strings(ids)
	return ids
}
