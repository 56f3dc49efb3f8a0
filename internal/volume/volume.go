// Package volume keeps named volumes: persistent directories on the host,
// each on its own loop-mounted ext4 file of a fixed size (its quota), that
// outlive sandboxes and can be mounted into several at once. A volume is
// <state>/volumes/<name>/{volume.json,disk.img}, mounted at
// <run>/volumes/<name> while it exists (mounted again after a reboot by
// Mount). It never decides who may use a volume: the sandbox manager
// checks that before Remove.
package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Sizes.
const (
	DefaultSize = 10 << 30
	MinSize     = 64 << 20
	MaxSize     = 1 << 40
	// MaxVolumes bounds the volumes of a daemon (each is a loop device
	// while it exists).
	MaxVolumes = 64
)

var (
	ErrNotFound = errors.New("volume not found")
	ErrExists   = errors.New("volume exists")
	ErrInvalid  = errors.New("invalid volume")
	ErrLimit    = errors.New("too many volumes")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidateName checks a volume's name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q: 1-63 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

// Volume is a volume as listed.
type Volume struct {
	Name      string    `json:"name"`
	SizeBytes int64     `json:"sizeBytes"`
	CreatedAt time.Time `json:"createdAt"`
	// UsedBytes is what its files take (0 when it is not mounted).
	UsedBytes int64 `json:"-"`
}

// Store holds the volumes.
type Store struct {
	state, run string
	mu         sync.Mutex
}

// Open returns the store with volumes in stateDir/volumes, mounted below
// runDir/volumes.
func Open(stateDir, runDir string) (*Store, error) {
	s := &Store{state: filepath.Join(stateDir, "volumes"), run: filepath.Join(runDir, "volumes")}
	for _, d := range []string{s.state, s.run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Store) dir(name string) string   { return filepath.Join(s.state, name) }
func (s *Store) image(name string) string { return filepath.Join(s.state, name, "disk.img") }

// HostPath is where volume name is mounted on the host.
func (s *Store) HostPath(name string) string { return filepath.Join(s.run, name) }

// Create makes volume name of size bytes (DefaultSize when 0) and mounts
// it on the host.
func (s *Store) Create(ctx context.Context, name string, size int64, now time.Time) (Volume, error) {
	if err := ValidateName(name); err != nil {
		return Volume{}, err
	}
	if size == 0 {
		size = DefaultSize
	}
	if size < MinSize || size > MaxSize {
		return Volume{}, fmt.Errorf("%w: size %d: from %d (64Mi) to %d (1Ti) bytes", ErrInvalid, size, int64(MinSize), int64(MaxSize))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.dir(name)); err == nil {
		return Volume{}, fmt.Errorf("%w: %s", ErrExists, name)
	}
	if names, _ := s.namesLocked(); len(names) >= MaxVolumes {
		return Volume{}, fmt.Errorf("%w: at most %d", ErrLimit, MaxVolumes)
	}
	v := Volume{Name: name, SizeBytes: size, CreatedAt: now.UTC()}
	if err := s.create(ctx, v); err != nil {
		s.removeLocked(ctx, name)
		return Volume{}, err
	}
	return v, nil
}

func (s *Store) create(ctx context.Context, v Volume) error {
	if err := os.MkdirAll(s.dir(v.Name), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(s.image(v.Name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(v.SizeBytes)
	f.Close()
	if err != nil {
		return err
	}
	// Sparse, no reserved blocks, lazy init: fast whatever the size; the
	// file takes only what is written.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
		"-L", "volume", s.image(v.Name), strconv.FormatInt(v.SizeBytes/1024, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("formatting volume %s (mkfs.ext4): %w: %s", v.Name, err, strings.TrimSpace(string(out)))
	}
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir(v.Name), "volume.json"), data, 0o600); err != nil {
		return err
	}
	_, err = s.mountLocked(ctx, v.Name)
	return err
}

// Mount makes sure volume name is mounted on the host and returns where.
func (s *Store) Mount(ctx context.Context, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.image(name)); err != nil {
		return "", fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return s.mountLocked(ctx, name)
}

func (s *Store) mountLocked(ctx context.Context, name string) (string, error) {
	target := s.HostPath(name)
	if mounted(target) {
		return target, nil
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "mount", "-o", "loop,nosuid,nodev", s.image(name), target).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("mounting volume %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	// The volume's root belongs to the sandboxes' root, readable by all.
	os.Chmod(target, 0o755)
	return target, nil
}

// mounted reports whether dir is a mount point (its device differs from
// its parent's).
func mounted(dir string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// Exists reports whether volume name exists.
func (s *Store) Exists(name string) bool {
	if ValidateName(name) != nil {
		return false
	}
	_, err := os.Stat(s.image(name))
	return err == nil
}

// List returns the volumes, sorted by name.
func (s *Store) List() ([]Volume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.namesLocked()
	if err != nil {
		return nil, err
	}
	var out []Volume
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(s.dir(n), "volume.json"))
		if err != nil {
			continue
		}
		var v Volume
		if json.Unmarshal(data, &v) != nil {
			continue
		}
		var st unix.Statfs_t
		if mounted(s.HostPath(n)) && unix.Statfs(s.HostPath(n), &st) == nil {
			v.UsedBytes = int64(st.Blocks-st.Bfree) * st.Bsize
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Store) namesLocked() ([]string, error) {
	entries, err := os.ReadDir(s.state)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && nameRE.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Remove unmounts and deletes volume name and its files. The caller has
// made sure no sandbox uses it.
func (s *Store) Remove(ctx context.Context, name string) error {
	if !s.Exists(name) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(ctx, name)
}

func (s *Store) removeLocked(ctx context.Context, name string) error {
	target := s.HostPath(name)
	if mounted(target) {
		if err := unix.Unmount(target, 0); err != nil {
			return fmt.Errorf("unmounting volume %s: %w", name, err)
		}
	}
	os.Remove(target)
	// The loop device goes with the unmount (autoclear); make sure.
	if out, err := exec.CommandContext(ctx, "losetup", "-j", s.image(name)).Output(); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
				exec.CommandContext(ctx, "losetup", "-d", dev).Run()
			}
		}
	}
	return os.RemoveAll(s.dir(name))
}
