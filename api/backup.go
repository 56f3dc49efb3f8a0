package api

import (
	"net/http"
	"time"
)

// Error codes of backups (docs/snapshots.md, Backups).
const (
	// CodeBackupNotFound: no backup has that ID (for this tenant).
	CodeBackupNotFound Code = "BACKUP_NOT_FOUND"
	// CodeBackupExpired: the backup's TTL has passed; it is being
	// collected.
	CodeBackupExpired Code = "BACKUP_EXPIRED"
	// CodeBackupTooLarge: the directory is larger than the daemon's
	// --max-backup-size.
	CodeBackupTooLarge Code = "BACKUP_TOO_LARGE"
	// CodeBackupStoreUnavailable: the object store that keeps backups
	// (--backup-store s3://...) did not answer or refused the daemon.
	CodeBackupStoreUnavailable Code = "BACKUP_STORE_UNAVAILABLE"
)

func init() {
	RegisterStatus(CodeBackupNotFound, http.StatusNotFound)
	RegisterStatus(CodeBackupExpired, http.StatusGone)
	RegisterStatus(CodeBackupTooLarge, http.StatusRequestEntityTooLarge)
	RegisterStatus(CodeBackupStoreUnavailable, http.StatusBadGateway)
}

// BackupRequest is the body of POST /v1/sandboxes/{id}/backups.
type BackupRequest struct {
	// Dir is the directory to back up: an absolute, clean path in the
	// sandbox, not / nor in /proc, /sys or /dev. Required.
	Dir string `json:"dir"`
	// Name is a free-form label, up to 128 bytes. Optional.
	Name string `json:"name,omitempty"`
	// TTL is how long the backup is kept, a Go duration ("1h", "30m");
	// default "72h", at least "1s", at most "8760h".
	TTL string `json:"ttl,omitempty"`
}

// Backup is a backup's handle.
type Backup struct {
	// ID names the backup ("bk-" and 16 hex digits).
	ID string `json:"id"`
	// Tenant owns the backup ("default": the admin namespace).
	Tenant string `json:"tenant,omitempty"`
	// Sandbox is the ID of the sandbox the directory was taken from (it
	// may be gone); Dir the directory, where a restore mounts it by
	// default.
	Sandbox string `json:"sandbox"`
	Dir     string `json:"dir"`
	Name    string `json:"name,omitempty"`
	// Size is the bytes the backup takes in its store (a compressed
	// squashfs image).
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"createdAt"`
	// ExpiresAt is when the backup is collected.
	ExpiresAt time.Time `json:"expiresAt"`
}

// BackupList is the body of GET /v1/backups.
type BackupList struct {
	Backups []Backup `json:"backups"`
}

// RestoreRequest is the body of POST /v1/sandboxes/{id}/backups/restore.
type RestoreRequest struct {
	// Backup is the backup's ID. Required.
	Backup string `json:"backup"`
	// Dir is where to mount it; default: the backup's own directory.
	Dir string `json:"dir,omitempty"`
}

// Restore is a backup restored into a sandbox.
type Restore struct {
	Backup string `json:"backup"`
	// Sandbox is the sandbox it was restored into; Dir where.
	Sandbox   string    `json:"sandbox"`
	Dir       string    `json:"dir"`
	CreatedAt time.Time `json:"createdAt"`
}
