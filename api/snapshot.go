package api

import (
	"net/http"
	"time"
)

// Error codes of snapshots (docs/snapshots.md).
const (
	// CodeSnapshotNotFound: no snapshot has that name.
	CodeSnapshotNotFound Code = "SNAPSHOT_NOT_FOUND"
	// CodeSnapshotExists: a snapshot already has that name.
	CodeSnapshotExists Code = "SNAPSHOT_EXISTS"
	// CodeSnapshotInUse: sandboxes were created from the snapshot; destroy
	// them first.
	CodeSnapshotInUse Code = "SNAPSHOT_IN_USE"
	// CodeInvalidSnapshotName: the name is not 1-63 characters of
	// [a-z0-9._-] starting and ending with a letter or digit.
	CodeInvalidSnapshotName Code = "INVALID_SNAPSHOT_NAME"
	// CodeMemorySnapshotUnsupported: memory and processes were asked to be
	// kept (a memory snapshot, a pause) and the sandbox's runtime cannot.
	CodeMemorySnapshotUnsupported Code = "MEMORY_SNAPSHOT_UNSUPPORTED"
)

func init() {
	RegisterStatus(CodeSnapshotNotFound, http.StatusNotFound)
	RegisterStatus(CodeSnapshotExists, http.StatusConflict)
	RegisterStatus(CodeSnapshotInUse, http.StatusConflict)
	RegisterStatus(CodeInvalidSnapshotName, http.StatusBadRequest)
	RegisterStatus(CodeMemorySnapshotUnsupported, http.StatusNotImplemented)
}

// SnapshotRequest is the body of POST /v1/sandboxes/{id}/snapshots.
type SnapshotRequest struct {
	// Name names the snapshot: 1-63 characters of [a-z0-9._-], starting
	// and ending with a letter or digit. Required; unique.
	Name string `json:"name"`
	// Memory requires memory and processes as well as files: a runtime
	// that cannot keep them (crun, runc) answers
	// MEMORY_SNAPSHOT_UNSUPPORTED. Without it or FilesystemOnly, a gVisor
	// sandbox's snapshot keeps its memory and others keep files alone.
	Memory bool `json:"memory,omitempty"`
	// FilesystemOnly keeps the files alone, on any runtime. Not with
	// Memory.
	FilesystemOnly bool `json:"filesystemOnly,omitempty"`
}

// Snapshot describes one snapshot.
type Snapshot struct {
	Name string `json:"name"`
	// Tenant owns the snapshot ("default": the admin namespace); names
	// are per tenant, like sandbox IDs.
	Tenant string `json:"tenant,omitempty"`
	// Sandbox is the ID of the sandbox it was taken of (it may be gone).
	Sandbox string `json:"sandbox"`
	// Image and ImageDigest are the image below the snapshot's files;
	// forks boot from that image by digest.
	Image       string `json:"image"`
	ImageDigest string `json:"imageDigest,omitempty"`
	// Runtime is the runtime forks run on.
	Runtime string `json:"runtime"`
	// Layer is the content address of the snapshot's files
	// ("sha256-<hex>"); snapshots with equal files share one layer.
	Layer string `json:"layer"`
	// Size is the bytes of regular files in the layer; Files the entries.
	Size  int64 `json:"size"`
	Files int64 `json:"files"`
	// Memory says whether the snapshot holds memory and processes.
	Memory bool `json:"memory"`
	// FrozenMs is how long the sandbox was frozen, in milliseconds.
	FrozenMs  float64   `json:"frozenMs"`
	CreatedAt time.Time `json:"createdAt"`
}

// PauseRequest is the (optional) body of POST /v1/sandboxes/{id}/pause.
type PauseRequest struct {
	// FilesystemOnly pauses without memory: the container stops, its files
	// stay (as POST .../stop). Without it, a runtime that cannot keep
	// memory and processes answers MEMORY_SNAPSHOT_UNSUPPORTED.
	FilesystemOnly bool `json:"filesystemOnly,omitempty"`
}

// SnapshotList is the body of GET /v1/snapshots.
type SnapshotList struct {
	Snapshots []Snapshot `json:"snapshots"`
}
