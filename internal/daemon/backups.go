package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/backup"
	"github.com/sandboxd/sandboxd/internal/bucket"
	"github.com/sandboxd/sandboxd/internal/s3"
	"github.com/sandboxd/sandboxd/internal/secret"
)

// maxBackupBytes caps --max-backup-size: an image goes to an object store
// in one PUT, which S3 bounds at 5 GiB.
const maxBackupBytes = 4 << 30

// collectBackupsEvery is how often expired backups are removed.
const collectBackupsEvery = time.Minute

// parseBackupStore splits s3://BUCKET[/PREFIX] into a bucket and a prefix
// ending in '/' (or empty).
func parseBackupStore(raw string) (bucket.Source, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" || u.Host == "" || u.RawQuery != "" || u.User != nil {
		return bucket.Source{}, fmt.Errorf("--backup-store %q: want s3://BUCKET[/PREFIX]", raw)
	}
	src := bucket.Source{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/"), Endpoint: "http://placeholder"}
	if err := src.Validate(); err != nil {
		return bucket.Source{}, fmt.Errorf("--backup-store %q: %w", raw, err)
	}
	return src, nil
}

// openBackups opens the backup store: <state>/backups, which keeps the
// backups or, with an s3:// store, caches their images. The remote
// store's credentials are the daemon's secret BackupStoreSecret, read at
// each use; they never come from a request and never go into a sandbox.
func openBackups(cfg Config, secrets *secret.Store) (*backup.Store, error) {
	var remote *backup.Remote
	if cfg.BackupStore != "" {
		src, err := parseBackupStore(cfg.BackupStore)
		if err != nil {
			return nil, err
		}
		prefix := src.Prefix
		if prefix != "" {
			prefix += "/"
		}
		name := cfg.BackupStoreSecret
		remote = &backup.Remote{Endpoint: cfg.BackupStoreEndpoint, Region: cfg.BackupStoreRegion, Bucket: src.Bucket, Prefix: prefix,
			Creds: func() (s3.Credentials, error) { return secretCredentials(secrets, name) }}
	}
	return backup.Open(filepath.Join(cfg.StateDir, "backups"), remote)
}

// secretCredentials reads S3 credentials from the secret name.
func secretCredentials(secrets *secret.Store, name string) (s3.Credentials, error) {
	sec, err := secrets.Get(name)
	if err != nil {
		return s3.Credentials{}, err
	}
	c := s3.Credentials{AccessKeyID: sec.Values["AWS_ACCESS_KEY_ID"], SecretAccessKey: sec.Values["AWS_SECRET_ACCESS_KEY"],
		SessionToken: sec.Values["AWS_SESSION_TOKEN"]}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" {
		return s3.Credentials{}, errors.New("the secret " + name + " lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY")
	}
	return c, nil
}

// collectBackups removes expired backups now and every minute until ctx
// ends.
func collectBackups(st *backup.Store, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		t := time.NewTicker(collectBackupsEvery)
		defer t.Stop()
		for {
			n, err := st.Collect(ctx)
			if err != nil && ctx.Err() == nil {
				log.Warn("collecting expired backups", "err", err)
			}
			if n > 0 {
				log.Info("expired backups collected", "count", n)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	}
}
