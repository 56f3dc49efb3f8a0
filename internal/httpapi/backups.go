package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/backup"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// backupRoutes are the routes of backups (docs/snapshots.md, Backups). A
// backup belongs to the tenant of the sandbox it was taken from: another
// tenant's is BACKUP_NOT_FOUND, as one that does not exist.
func (s *Server) backupRoutes() []route {
	return []route{
		{pattern: "POST /v1/sandboxes/{id}/backups", handler: s.createBackup},
		{pattern: "POST /v1/sandboxes/{id}/backups/restore", handler: s.restoreBackup},
		{pattern: "GET /v1/backups", handler: s.listBackups},
		{pattern: "GET /v1/backups/{backup}", handler: s.inspectBackup},
		{pattern: "DELETE /v1/backups/{backup}", handler: s.removeBackup},
	}
}

// classifyBackup maps the backup domain's errors to wire errors; nil for
// errors of other domains.
func classifyBackup(err error) *api.Error {
	codes := []struct {
		target error
		code   api.Code
	}{
		{backup.ErrNotFound, api.CodeBackupNotFound},
		{backup.ErrExpired, api.CodeBackupExpired},
		{backup.ErrTooLarge, api.CodeBackupTooLarge},
		{backup.ErrUnavailable, api.CodeBackupStoreUnavailable},
		{backup.ErrInvalid, api.CodeValidationFailed},
	}
	for _, c := range codes {
		if errors.Is(err, c.target) {
			return &api.Error{Code: c.code, Message: err.Error()}
		}
	}
	return nil
}

// createBackup serves POST /v1/sandboxes/{id}/backups. It does not create
// unknown sandboxes.
func (s *Server) createBackup(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var req api.BackupRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeAPIError(w, api.Errorf(api.CodeValidationFailed, "ttl %q: want a duration such as 1h or 30m", req.TTL))
			return
		}
		ttl = d
	}
	bk, err := s.opts.Manager.CreateBackup(r.Context(), id, req.Dir, sandbox.BackupOptions{Name: req.Name, TTL: ttl})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, backupToWire(bk))
}

// lookupBackup finds the backup named by id for the caller of r: one of
// another tenant is not found.
func (s *Server) lookupBackup(r *http.Request, id string) (backup.Backup, error) {
	st := s.opts.Manager.Backups()
	if st == nil {
		return backup.Backup{}, backup.ErrNotFound
	}
	bk, err := st.Get(r.Context(), id)
	if err != nil {
		return backup.Backup{}, err
	}
	if !callerOf(r).Owns(bk.Sandbox) {
		return backup.Backup{}, backup.ErrNotFound
	}
	return bk, nil
}

// restoreBackup serves POST /v1/sandboxes/{id}/backups/restore.
func (s *Server) restoreBackup(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var req api.RestoreRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	bk, err := s.lookupBackup(r, req.Backup)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.opts.Manager.RestoreBackup(r.Context(), id, bk, req.Dir)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, api.Restore{Backup: res.Backup, Sandbox: tenant.Local(id), Dir: res.Path, CreatedAt: res.CreatedAt})
}

func (s *Server) listBackups(w http.ResponseWriter, r *http.Request) {
	out := api.BackupList{Backups: []api.Backup{}}
	if st := s.opts.Manager.Backups(); st != nil {
		list, err := st.List(r.Context())
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		caller := callerOf(r)
		for _, bk := range list {
			if caller.Owns(bk.Sandbox) {
				out.Backups = append(out.Backups, backupToWire(bk))
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) inspectBackup(w http.ResponseWriter, r *http.Request) {
	bk, err := s.lookupBackup(r, r.PathValue("backup"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, backupToWire(bk))
}

func (s *Server) removeBackup(w http.ResponseWriter, r *http.Request) {
	bk, err := s.lookupBackup(r, r.PathValue("backup"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.opts.Manager.Backups().Remove(r.Context(), bk.ID); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func backupToWire(bk backup.Backup) api.Backup {
	return api.Backup{
		ID: bk.ID, Tenant: wireTenant(bk.Sandbox), Sandbox: tenant.Local(bk.Sandbox), Dir: bk.Dir, Name: bk.Name,
		Size: bk.Size, CreatedAt: bk.CreatedAt, ExpiresAt: bk.ExpiresAt,
	}
}
