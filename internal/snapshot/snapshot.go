// Package snapshot owns the daemon's snapshots: named records of a
// sandbox's files at one moment, each pointing at an immutable,
// content-addressed layer that sandboxes forked from it mount read-only on
// top of their image's layers. It copies and hashes directories and keeps
// records on disk; it never starts, stops or freezes a sandbox (the
// sandbox manager does, around Capture), and never deletes a layer a
// record names.
package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/atomicfile"
)

// Errors of the snapshot domain; the API edge maps each to a code.
var (
	ErrNotFound    = errors.New("snapshot not found")
	ErrExists      = errors.New("snapshot already exists")
	ErrInvalidName = errors.New("invalid snapshot name")
	ErrInUse       = errors.New("snapshot in use")
)

// Snapshot is one snapshot's record.
type Snapshot struct {
	Name string `json:"name"`
	// Sandbox is the ID of the sandbox it was taken of (which may be gone).
	Sandbox string `json:"sandbox"`
	// Image and ImageDigest are the sandbox's image: the layers below the
	// snapshot's own.
	Image       string `json:"image"`
	ImageDigest string `json:"imageDigest,omitempty"`
	// Runtime is the runtime of the sandbox it was taken of; forks run on
	// it too.
	Runtime string `json:"runtime"`
	// Layer is the content address of the frozen writable layer
	// ("sha256-<hex>").
	Layer string `json:"layer"`
	// Size is the bytes of regular files in the layer.
	Size int64 `json:"size"`
	// Files is the number of entries in the layer.
	Files int64 `json:"files"`
	// Memory says whether the snapshot holds memory and processes: a
	// checkpoint of a gVisor sandbox at MemoryPath(Name).
	Memory bool `json:"memory"`
	// Frozen is how long the sandbox was frozen while its files were
	// copied.
	Frozen    time.Duration `json:"frozen"`
	CreatedAt time.Time     `json:"createdAt"`
}

// maxNameLength bounds a snapshot name.
const maxNameLength = 63

var namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$`)

// ValidateName checks a snapshot name: 1-63 characters of [a-z0-9._-],
// starting and ending with a letter or digit.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > maxNameLength || !namePattern.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("%w: %q: use 1-%d characters of a-z, 0-9, '.', '_' and '-', starting and ending with a letter or digit",
			ErrInvalidName, name, maxNameLength)
	}
	return nil
}

// Store keeps snapshots in a directory: records/<name>.json, layers/<layer>,
// memory/<name> (memory.go) and tmp/ for copies in progress (emptied at
// Open).
type Store struct {
	dir string

	// mu serialises changes of records and layers.
	mu sync.Mutex
}

// Open opens (creating) the store in dir, removes copies a crash left
// half-made, and layers no record names (a crash between a layer and its
// record).
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir}
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("clearing unfinished snapshots: %w", err)
	}
	for _, d := range []string{s.recordsDir(), s.layersDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := s.collect(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) recordsDir() string { return filepath.Join(s.dir, "records") }
func (s *Store) layersDir() string  { return filepath.Join(s.dir, "layers") }
func (s *Store) tmpDir() string     { return filepath.Join(s.dir, "tmp") }

// LayerPath is where layer is on disk.
func (s *Store) LayerPath(layer string) string { return filepath.Join(s.layersDir(), layer) }

// Get returns the snapshot name.
func (s *Store) Get(name string) (Snapshot, error) {
	if err := ValidateName(name); err != nil {
		return Snapshot{}, err
	}
	data, err := os.ReadFile(filepath.Join(s.recordsDir(), name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return Snapshot{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return Snapshot{}, err
	}
	var snap Snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s: %w", name, err)
	}
	return snap, nil
}

// List returns every snapshot, by name.
func (s *Store) List() ([]Snapshot, error) {
	entries, err := os.ReadDir(s.recordsDir())
	if err != nil {
		return nil, err
	}
	out := []Snapshot{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		snap, err := s.Get(name)
		if err != nil {
			continue // removed meanwhile, or not ours
		}
		out = append(out, snap)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Add records snap, whose layer must be in the store. A name is never
// reused while its record exists.
func (s *Store) Add(snap Snapshot) error {
	if err := ValidateName(snap.Name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.LayerPath(snap.Layer)); err != nil {
		return fmt.Errorf("snapshot %s: layer %s: %w", snap.Name, snap.Layer, err)
	}
	path := filepath.Join(s.recordsDir(), snap.Name+".json")
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s", ErrExists, snap.Name)
	}
	data, err := json.MarshalIndent(snap, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// Exists reports whether a snapshot name is recorded.
func (s *Store) Exists(name string) bool {
	_, err := os.Lstat(filepath.Join(s.recordsDir(), name+".json"))
	return err == nil
}

// Remove deletes the snapshot's record, and its layer when no other
// record names it. The caller checks that no sandbox uses it.
func (s *Store) Remove(name string) error {
	if _, err := s.Get(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Remove(filepath.Join(s.recordsDir(), name+".json")); err != nil {
		return err
	}
	return s.collectLocked()
}

// collect removes layers no record names.
func (s *Store) collect() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.collectLocked()
}

func (s *Store) collectLocked() error {
	snaps, err := s.List()
	if err != nil {
		return err
	}
	named := map[string]bool{}
	for _, snap := range snaps {
		named[snap.Layer] = true
	}
	entries, err := os.ReadDir(s.layersDir())
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if !named[e.Name()] {
			errs = append(errs, os.RemoveAll(s.LayerPath(e.Name())))
		}
	}
	errs = append(errs, s.collectMemoryLocked(snaps))
	return errors.Join(errs...)
}
