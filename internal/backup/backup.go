// Package backup owns backups of a sandbox's directory (docs/snapshots.md,
// Backups): a tar stream of the directory packed into a read-only squashfs
// image, kept with its record in the daemon's state directory or in an
// S3-compatible bucket, and found again by ID until it expires. It packs,
// stores, lists, fetches (into a local cache) and collects; mounting an
// image into a sandbox is the sandbox package's.
//
// Why the image is made from a tar stream rather than read from the
// sandbox's files on the host: the stream comes from the sandbox's own
// agent, which resolves the directory inside the sandbox, so no path the
// sandbox controls (a symlink swapped in mid-walk) is ever resolved by a
// process of the host's root. The stream is still hostile input: it is
// bounded in bytes and turned into an image by tar2sqfs running as an
// unprivileged user (nobody) that can write only the image's directory.
//
// It must never take credentials from a request or a sandbox: the remote
// store's come from the daemon's configuration.
package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/atomicfile"
	"github.com/sandboxd/sandboxd/internal/s3"
)

// Errors of backups; the API edge maps each to its code.
var (
	ErrNotFound    = errors.New("backup not found")
	ErrExpired     = errors.New("backup expired")
	ErrTooLarge    = errors.New("backup too large")
	ErrUnavailable = errors.New("backup store unavailable")
	ErrInvalid     = errors.New("invalid backup request")
)

// TTL bounds: a backup lives DefaultTTL unless asked otherwise, at least
// MinTTL and at most MaxTTL.
const (
	DefaultTTL = 72 * time.Hour
	MinTTL     = time.Second
	MaxTTL     = 365 * 24 * time.Hour
)

// MaxNameLen bounds a backup's free-form name.
const MaxNameLen = 128

// maxRecord bounds a record read back from a store.
const maxRecord = 64 << 10

// Backup is one backup's record.
type Backup struct {
	ID string `json:"id"`
	// Sandbox is the (daemon-wide, tenant-scoped) ID of the sandbox the
	// directory was taken from; it may be gone.
	Sandbox string `json:"sandbox"`
	// Dir is the directory's absolute path in that sandbox: where a
	// restore mounts it by default.
	Dir  string `json:"dir"`
	Name string `json:"name,omitempty"`
	// Size is the image's bytes (compressed); Bytes the tar stream's.
	Size      int64     `json:"size"`
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Expired reports whether b has expired at now.
func (b Backup) Expired(now time.Time) bool { return !now.Before(b.ExpiresAt) }

var idPattern = regexp.MustCompile(`^bk-[0-9a-f]{16}$`)

// ValidateID checks a backup ID's form; a malformed one names no backup.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return nil
}

// ValidateName checks a backup's name: up to MaxNameLen printable
// characters.
func ValidateName(name string) error {
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: name: at most %d bytes", ErrInvalid, MaxNameLen)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: name: no control characters", ErrInvalid)
		}
	}
	return nil
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return "bk-" + hex.EncodeToString(b[:])
}

// Remote is an S3-compatible bucket that keeps backups: <prefix><id>.json
// and <prefix><id>.sqfs.
type Remote struct {
	Endpoint, Region, Bucket string
	// Prefix ends with '/' unless empty.
	Prefix string
	// Creds reads the credentials at each use, so that the daemon's
	// secret holding them can be set (or rotated) while it runs.
	Creds func() (s3.Credentials, error)
}

// client is an S3 client for r with its current credentials.
func (r *Remote) client() (*s3.Client, error) {
	c, err := r.Creds()
	if err != nil {
		return nil, unavailable(fmt.Errorf("the backup store's credentials: %w", err))
	}
	return &s3.Client{Endpoint: r.Endpoint, Region: r.Region, Creds: c, HTTP: &http.Client{Timeout: 30 * time.Minute}}, nil
}

// Store keeps backups. Its directory holds records/ and images/ (the
// local store), cache/ (images fetched from the remote store) and tmp/.
type Store struct {
	dir    string
	remote *Remote
	now    func() time.Time

	// mu serialises fetches into the cache and removals.
	mu sync.Mutex
}

// Open opens (creating) the store in dir; remote, when not nil, keeps the
// backups instead of dir (which then caches images).
func Open(dir string, remote *Remote) (*Store, error) {
	for _, d := range []string{"records", "images", "cache", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	// What a daemon killed mid-create left.
	if entries, err := os.ReadDir(filepath.Join(dir, "tmp")); err == nil {
		for _, e := range entries {
			os.RemoveAll(filepath.Join(dir, "tmp", e.Name()))
		}
	}
	return &Store{dir: dir, remote: remote, now: time.Now}, nil
}

// Remote reports whether backups live in an object store.
func (s *Store) Remote() bool { return s.remote != nil }

func (s *Store) recordPath(id string) string { return filepath.Join(s.dir, "records", id+".json") }
func (s *Store) localImage(id string) string { return filepath.Join(s.dir, "images", id+".sqfs") }
func (s *Store) cacheImage(id string) string { return filepath.Join(s.dir, "cache", id+".sqfs") }

func (s *Store) key(id, ext string) string { return s.remote.Prefix + id + ext }

// unavailable classifies an object store failure.
func unavailable(err error) error {
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// Get returns the backup id: ErrNotFound when there is none, ErrExpired
// when it has expired (it is then collected).
func (s *Store) Get(ctx context.Context, id string) (Backup, error) {
	if err := ValidateID(id); err != nil {
		return Backup{}, err
	}
	b, err := s.read(ctx, id)
	if err != nil {
		return Backup{}, err
	}
	if b.Expired(s.now()) {
		s.Remove(ctx, id)
		return Backup{}, fmt.Errorf("%w: %s expired at %s", ErrExpired, id, b.ExpiresAt.Format(time.RFC3339))
	}
	return b, nil
}

func (s *Store) read(ctx context.Context, id string) (Backup, error) {
	var data []byte
	var err error
	if s.remote != nil {
		c, cerr := s.remote.client()
		if cerr != nil {
			return Backup{}, cerr
		}
		data, err = c.GetObject(ctx, s.remote.Bucket, s.key(id, ".json"), maxRecord)
		if errors.Is(err, s3.ErrNotFound) {
			return Backup{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err != nil {
			return Backup{}, unavailable(err)
		}
	} else {
		data, err = os.ReadFile(s.recordPath(id))
		if errors.Is(err, os.ErrNotExist) {
			return Backup{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err != nil {
			return Backup{}, err
		}
	}
	var b Backup
	if err := json.Unmarshal(data, &b); err != nil || b.ID != id {
		return Backup{}, fmt.Errorf("%w: %s: unreadable record", ErrNotFound, id)
	}
	return b, nil
}

// List returns every backup that has not expired, oldest first.
func (s *Store) List(ctx context.Context) ([]Backup, error) {
	all, err := s.all(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := all[:0]
	for _, b := range all {
		if !b.Expired(now) {
			out = append(out, b)
		}
	}
	return out, nil
}

// all returns every record, expired or not.
func (s *Store) all(ctx context.Context) ([]Backup, error) {
	ids, err := s.ids(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Backup, 0, len(ids))
	for _, id := range ids {
		b, err := s.read(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

func (s *Store) ids(ctx context.Context) ([]string, error) {
	var names []string
	if s.remote != nil {
		c, err := s.remote.client()
		if err != nil {
			return nil, err
		}
		keys, err := c.ListKeys(ctx, s.remote.Bucket, s.remote.Prefix)
		if err != nil {
			return nil, unavailable(err)
		}
		for _, k := range keys {
			names = append(names, strings.TrimPrefix(k, s.remote.Prefix))
		}
	} else {
		entries, err := os.ReadDir(filepath.Join(s.dir, "records"))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			names = append(names, e.Name())
		}
	}
	var ids []string
	for _, n := range names {
		if id, ok := strings.CutSuffix(n, ".json"); ok && ValidateID(id) == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Remove deletes the backup id (record first, so that a half-removed
// backup is never listed). Sandboxes it was restored into keep their own
// link to its image.
func (s *Store) Remove(ctx context.Context, id string) error {
	if err := ValidateID(id); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.remote != nil {
		if _, err := s.read(ctx, id); err != nil {
			return err
		}
		c, err := s.remote.client()
		if err != nil {
			return err
		}
		if err := c.DeleteObject(ctx, s.remote.Bucket, s.key(id, ".json")); err != nil {
			return unavailable(err)
		}
		if err := c.DeleteObject(ctx, s.remote.Bucket, s.key(id, ".sqfs")); err != nil {
			return unavailable(err)
		}
		os.Remove(s.cacheImage(id))
		return nil
	}
	if err := os.Remove(s.recordPath(id)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return err
	}
	return os.Remove(s.localImage(id))
}

// Collect removes every expired backup and returns how many it removed.
func (s *Store) Collect(ctx context.Context) (int, error) {
	all, err := s.all(ctx)
	if err != nil {
		return 0, err
	}
	now, n := s.now(), 0
	var errs []error
	for _, b := range all {
		if !b.Expired(now) {
			continue
		}
		if err := s.Remove(ctx, b.ID); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// Image returns the path of backup b's image on this host, downloading it
// from the remote store into the cache first if needed. The file must not
// be changed; link it to keep it beyond the backup's removal.
func (s *Store) Image(ctx context.Context, b Backup, limit int64) (string, error) {
	if s.remote == nil {
		return s.localImage(b.ID), nil
	}
	cached := s.cacheImage(b.ID)
	if _, err := os.Stat(cached); err == nil {
		return cached, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(cached); err == nil {
		return cached, nil
	}
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "tmp"), "fetch-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	part := filepath.Join(tmp, "image.sqfs")
	c, err := s.remote.client()
	if err != nil {
		return "", err
	}
	if _, err := c.GetFile(ctx, s.remote.Bucket, s.key(b.ID, ".sqfs"), part, limit); err != nil {
		if errors.Is(err, s3.ErrNotFound) {
			return "", fmt.Errorf("%w: %s: its image is gone from the store", ErrNotFound, b.ID)
		}
		return "", unavailable(err)
	}
	if err := os.Rename(part, cached); err != nil {
		return "", err
	}
	return cached, nil
}

// save stores b with its image (at image, in the store's tmp directory):
// the image first, the record last, so that a record always has its
// image.
func (s *Store) save(ctx context.Context, b Backup, image string) error {
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if s.remote == nil {
		if err := os.Rename(image, s.localImage(b.ID)); err != nil {
			return err
		}
		if err := atomicfile.Write(s.recordPath(b.ID), data, 0o600); err != nil {
			os.Remove(s.localImage(b.ID))
			return err
		}
		return nil
	}
	c, err := s.remote.client()
	if err != nil {
		return err
	}
	if err := c.PutFile(ctx, s.remote.Bucket, s.key(b.ID, ".sqfs"), image); err != nil {
		return unavailable(err)
	}
	if err := c.PutObject(ctx, s.remote.Bucket, s.key(b.ID, ".json"), data); err != nil {
		c.DeleteObject(ctx, s.remote.Bucket, s.key(b.ID, ".sqfs"))
		return unavailable(err)
	}
	// Kept in the cache: a restore on this host needs no download.
	return os.Rename(image, s.cacheImage(b.ID))
}
