package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Memory images. A memory snapshot (gVisor) also holds a checkpoint of the
// sandbox's kernel, memory and processes (runsc checkpoint), kept in
// memory/<name>/ beside the record. Every fork of the snapshot restores
// from that one directory, read-only: runsc reads the image into the new
// sandbox's own memory, so forks share the image on disk and never write
// to it.

func (s *Store) memoryDir() string { return filepath.Join(s.dir, "memory") }

// MemoryPath is where the memory image of the snapshot name is.
func (s *Store) MemoryPath(name string) string { return filepath.Join(s.memoryDir(), name) }

// NewMemoryDir makes an empty directory for a checkpoint in progress, in
// the store's tmp/ (emptied at Open): the caller moves it in with
// AddMemory or removes it.
func (s *Store) NewMemoryDir() (string, error) {
	return os.MkdirTemp(s.tmpDir(), "memory-")
}

// AddMemory moves the checkpoint in dir (from NewMemoryDir) into the store
// as the memory image of the snapshot name, before its record is added
// (Add): a crash in between leaves an image without a record, which Open
// removes.
func (s *Store) AddMemory(name, dir string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(s.memoryDir(), 0o700); err != nil {
		return err
	}
	dst := s.MemoryPath(name)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.Rename(dir, dst); err != nil {
		return fmt.Errorf("installing the memory image of %s: %w", name, err)
	}
	return nil
}

// collectMemoryLocked removes memory images no memory snapshot's record
// names. s.mu is held.
func (s *Store) collectMemoryLocked(snaps []Snapshot) error {
	entries, err := os.ReadDir(s.memoryDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	named := map[string]bool{}
	for _, snap := range snaps {
		if snap.Memory {
			named[snap.Name] = true
		}
	}
	var errs []error
	for _, e := range entries {
		if !named[e.Name()] {
			errs = append(errs, os.RemoveAll(filepath.Join(s.memoryDir(), e.Name())))
		}
	}
	return errors.Join(errs...)
}
