package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/sandboxd/sandboxd/api"
)

// WithFromSnapshot creates the sandbox from the snapshot name: its files,
// image and runtime (docs/snapshots.md). An unknown name is an error
// matching ErrNotFound (SNAPSHOT_NOT_FOUND).
func WithFromSnapshot(name string) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) { o.FromSnapshot = name })
}

// SnapshotOptions configure Sandbox.Snapshot.
// Without either option, a gVisor sandbox's snapshot keeps its memory and
// processes, and other runtimes' keep files alone.
type SnapshotOptions struct {
	// Memory requires memory and processes as well as files; a runtime
	// that cannot fails with MEMORY_SNAPSHOT_UNSUPPORTED (matching
	// ErrNotAvailable).
	Memory bool
	// FilesystemOnly keeps the files alone, on any runtime.
	FilesystemOnly bool
}

// Snapshot takes a snapshot called name of the sandbox (its files; on
// gVisor its memory and processes too). The
// sandbox is frozen while its files are copied and runs on afterwards. A
// name in use fails with SNAPSHOT_EXISTS (ErrConflict); a bad one with
// INVALID_SNAPSHOT_NAME (ErrInvalid).
func (s *Sandbox) Snapshot(ctx context.Context, name string, o SnapshotOptions) (*api.Snapshot, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	var snap api.Snapshot
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/snapshots"), api.SnapshotRequest{Name: name, Memory: o.Memory, FilesystemOnly: o.FilesystemOnly}, &snap); err != nil {
		return nil, err
	}
	return &snap, nil
}

// ListSnapshots returns every snapshot, by name.
func (c *Client) ListSnapshots(ctx context.Context) ([]api.Snapshot, error) {
	var l api.SnapshotList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/snapshots", nil, &l); err != nil {
		return nil, err
	}
	return l.Snapshots, nil
}

// Snapshot returns the snapshot name; an unknown one is an error matching
// ErrNotFound (SNAPSHOT_NOT_FOUND).
func (c *Client) Snapshot(ctx context.Context, name string) (*api.Snapshot, error) {
	var snap api.Snapshot
	if err := c.doJSON(ctx, http.MethodGet, "/v1/snapshots/"+url.PathEscape(name), nil, &snap); err != nil {
		return nil, err
	}
	return &snap, nil
}

// RemoveSnapshot removes the snapshot name. While a sandbox created from
// it exists it fails with SNAPSHOT_IN_USE (matching ErrConflict).
func (c *Client) RemoveSnapshot(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/snapshots/"+url.PathEscape(name), nil, nil)
}

// PauseOptions configure Sandbox.Pause.
type PauseOptions struct {
	// FilesystemOnly pauses without memory: the container stops and the
	// files stay, as Stop. Without it, a runtime that cannot keep memory
	// and processes fails with MEMORY_SNAPSHOT_UNSUPPORTED (matching
	// ErrNotAvailable).
	FilesystemOnly bool
}

// Pause pauses the sandbox (docs/snapshots.md#pause-and-resume).
func (s *Sandbox) Pause(ctx context.Context, o PauseOptions) (*api.Sandbox, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	var sb api.Sandbox
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/pause"), api.PauseRequest{FilesystemOnly: o.FilesystemOnly}, &sb); err != nil {
		return nil, err
	}
	return &sb, nil
}

// Resume starts a paused sandbox again.
func (s *Sandbox) Resume(ctx context.Context) (*api.Sandbox, error) { return s.action(ctx, "resume") }
