package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// BackupOptions configure Sandbox.Backup.
type BackupOptions struct {
	// Name is a free-form label (up to 128 bytes).
	Name string
	// TTL is how long the backup is kept; zero: the daemon's default (72h).
	TTL time.Duration
}

// Backup backs up the directory dir (absolute) of the sandbox
// (docs/snapshots.md, Backups). A directory larger than the daemon's
// limit fails with BACKUP_TOO_LARGE; an unreachable object store with
// BACKUP_STORE_UNAVAILABLE (matching ErrUnavailable).
func (s *Sandbox) Backup(ctx context.Context, dir string, o BackupOptions) (*api.Backup, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	req := api.BackupRequest{Dir: dir, Name: o.Name}
	if o.TTL != 0 {
		req.TTL = o.TTL.String()
	}
	var b api.Backup
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/backups"), req, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// RestoreBackup mounts the backup id copy-on-write at dir in the sandbox
// (the backup's own directory when dir is empty), starting the sandbox if
// needed. An unknown backup fails with BACKUP_NOT_FOUND (ErrNotFound), an
// expired one with BACKUP_EXPIRED.
func (s *Sandbox) RestoreBackup(ctx context.Context, id, dir string) (*api.Restore, error) {
	if err := validateID(s.id); err != nil {
		return nil, err
	}
	var r api.Restore
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/backups/restore"), api.RestoreRequest{Backup: id, Dir: dir}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListBackups returns the caller's backups that have not expired, oldest
// first.
func (c *Client) ListBackups(ctx context.Context) ([]api.Backup, error) {
	var l api.BackupList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/backups", nil, &l); err != nil {
		return nil, err
	}
	return l.Backups, nil
}

// Backup returns the backup id.
func (c *Client) Backup(ctx context.Context, id string) (*api.Backup, error) {
	var b api.Backup
	if err := c.doJSON(ctx, http.MethodGet, "/v1/backups/"+url.PathEscape(id), nil, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// RemoveBackup removes the backup id. Sandboxes it was restored into keep
// their copy.
func (c *Client) RemoveBackup(ctx context.Context, id string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/backups/"+url.PathEscape(id), nil, nil)
}
