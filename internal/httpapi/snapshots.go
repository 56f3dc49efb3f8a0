package httpapi

import (
	"errors"
	"net/http"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// classifySnapshot maps the snapshot domain's errors to wire errors; nil
// for errors of other domains.
func classifySnapshot(err error) *api.Error {
	codes := []struct {
		target error
		code   api.Code
	}{
		{snapshot.ErrNotFound, api.CodeSnapshotNotFound},
		{snapshot.ErrExists, api.CodeSnapshotExists},
		{snapshot.ErrInUse, api.CodeSnapshotInUse},
		{snapshot.ErrInvalidName, api.CodeInvalidSnapshotName},
		{sandbox.ErrMemoryUnsupported, api.CodeMemorySnapshotUnsupported},
	}
	for _, c := range codes {
		if errors.Is(err, c.target) {
			return &api.Error{Code: c.code, Message: err.Error()}
		}
	}
	return nil
}

// createSnapshot serves POST /v1/sandboxes/{id}/snapshots. It does not
// create unknown sandboxes.
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var req api.SnapshotRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	if err := snapshot.ValidateName(req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	name, e := scopeSnapshot(r, req.Name)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	snap, err := s.opts.Manager.Snapshot(r.Context(), id, name, sandbox.SnapshotOptions{Memory: req.Memory, FilesystemOnly: req.FilesystemOnly})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, snapshotToWire(snap))
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	snaps, err := s.opts.Manager.ListSnapshots(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.SnapshotList{Snapshots: make([]api.Snapshot, 0, len(snaps))}
	caller := callerOf(r)
	for _, snap := range snaps {
		if t, _ := splitFlat(snap.Name); caller.Sees(t) {
			out.Snapshots = append(out.Snapshots, snapshotToWire(snap))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) inspectSnapshot(w http.ResponseWriter, r *http.Request) {
	name, e := scopeSnapshot(r, r.PathValue("name"))
	if e != nil {
		writeAPIError(w, e)
		return
	}
	snap, err := s.opts.Manager.GetSnapshot(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, snapshotToWire(snap))
}

func (s *Server) removeSnapshot(w http.ResponseWriter, r *http.Request) {
	name, e := scopeSnapshot(r, r.PathValue("name"))
	if e != nil {
		writeAPIError(w, e)
		return
	}
	if err := s.opts.Manager.RemoveSnapshot(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func snapshotToWire(snap snapshot.Snapshot) api.Snapshot {
	return api.Snapshot{
		Name: localFlat(snap.Name), Tenant: tenant.Display(tenantOfFlat(snap.Name)), Sandbox: tenant.Local(snap.Sandbox), Image: localImage(snap.Sandbox, snap.Image), ImageDigest: snap.ImageDigest,
		Runtime: snap.Runtime, Layer: snap.Layer, Size: snap.Size, Files: snap.Files, Memory: snap.Memory,
		FrozenMs: float64(snap.Frozen.Microseconds()) / 1000, CreatedAt: snap.CreatedAt,
	}
}

// pauseSandbox serves POST /v1/sandboxes/{id}/pause.
func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var req api.PauseRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, true); e != nil {
		writeAPIError(w, e)
		return
	}
	inf, err := s.opts.Manager.Pause(r.Context(), id, sandbox.PauseOptions{FilesystemOnly: req.FilesystemOnly})
	s.answerSandbox(w, r, inf, err)
}
