// Package secret keeps the daemon's named secrets: small sets of
// environment-style variables (AWS_ACCESS_KEY_ID, ...) that mounts and
// backup stores refer to by name, so that credentials are sent to the
// daemon once and never again. Each secret is one 0600 JSON file in a
// 0700 directory of the state directory. Values leave this package only
// through Get, for the daemon's own use; nothing here logs them, and the
// API never returns them.
package secret

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

// Limits on what a caller may store.
const (
	MaxSecrets    = 256
	MaxKeys       = 16
	MaxValueBytes = 4096
)

var (
	// ErrNotFound: no secret has the name.
	ErrNotFound = errors.New("secret not found")
	// ErrInvalid wraps validation errors.
	ErrInvalid = errors.New("invalid secret")
	// ErrLimit: MaxSecrets are stored.
	ErrLimit = errors.New("too many secrets")
)

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	keyRE  = regexp.MustCompile(`^[A-Z_][A-Z0-9_]{0,127}$`)
)

// Secret is a stored secret.
type Secret struct {
	Name      string            `json:"name"`
	Values    map[string]string `json:"values"`
	UpdatedAt time.Time         `json:"updatedAt"`
}

// Keys are the names of the secret's variables, sorted.
func (s Secret) Keys() []string {
	keys := make([]string, 0, len(s.Values))
	for k := range s.Values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Store is the secrets directory.
type Store struct {
	dir string
	mu  sync.Mutex
}

// Open returns the store in dir, creating it 0700.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

// ValidateName checks a secret's name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q: 1-63 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit", ErrInvalid, name)
	}
	return nil
}

func (s *Store) path(name string) string { return filepath.Join(s.dir, name+".json") }

// Set stores values under name, replacing what was there.
func (s *Store) Set(name string, values map[string]string, now time.Time) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if len(values) == 0 || len(values) > MaxKeys {
		return fmt.Errorf("%w: a secret has 1 to %d variables", ErrInvalid, MaxKeys)
	}
	for k, v := range values {
		if !keyRE.MatchString(k) {
			return fmt.Errorf("%w: variable name %q: A-Z, 0-9 and '_', not starting with a digit", ErrInvalid, k)
		}
		if len(v) > MaxValueBytes {
			return fmt.Errorf("%w: the value of %s is longer than %d bytes", ErrInvalid, k, MaxValueBytes)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.path(name)); errors.Is(err, os.ErrNotExist) {
		if names, _ := s.namesLocked(); len(names) >= MaxSecrets {
			return fmt.Errorf("%w: at most %d", ErrLimit, MaxSecrets)
		}
	}
	data, err := json.Marshal(Secret{Name: name, Values: values, UpdatedAt: now.UTC()})
	if err != nil {
		return err
	}
	return atomicfile.Write(s.path(name), data, 0o600)
}

// Get returns the secret name, values included: for the daemon only.
func (s *Store) Get(name string) (Secret, error) {
	if err := ValidateName(name); err != nil {
		return Secret{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	data, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return Secret{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return Secret{}, err
	}
	var sec Secret
	if err := json.Unmarshal(data, &sec); err != nil {
		return Secret{}, fmt.Errorf("reading secret %s: %w", name, err)
	}
	return sec, nil
}

// List returns every secret, sorted by name; values included, so callers
// at the edge must drop them.
func (s *Store) List() ([]Secret, error) {
	s.mu.Lock()
	names, err := s.namesLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := make([]Secret, 0, len(names))
	for _, n := range names {
		if sec, err := s.Get(n); err == nil {
			out = append(out, sec)
		}
	}
	return out, nil
}

func (s *Store) namesLocked() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && nameRE.MatchString(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// Remove deletes the secret name.
func (s *Store) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := os.Remove(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return err
}
