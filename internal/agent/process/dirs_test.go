package process

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// The manager's directories are made by the first process start, not by
// NewManager, and a start that could not make them leaves the next one to
// try again.
func TestDirectoriesAreMadeByTheFirstStart(t *testing.T) {
	m := newManager(t, Config{})
	if _, err := os.Stat(m.cfg.LogDir); err == nil {
		t.Fatal("NewManager made the log directory")
	}
	// A file where the log directory's parent should be.
	parent := filepath.Dir(m.cfg.LogDir)
	blocked := filepath.Join(parent, "blocked")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	logDir := m.cfg.LogDir
	m.cfg.LogDir = filepath.Join(blocked, "logs")
	if _, err := m.Start(context.Background(), StartOptions{Command: "true"}); err == nil {
		t.Fatal("a start without a log directory succeeded")
	}
	m.cfg.LogDir = logDir
	p, err := m.Start(context.Background(), StartOptions{Command: "echo again"})
	if err != nil {
		t.Fatalf("the next start did not try again: %v", err)
	}
	if info := waitDone(t, p); info.Status != Completed {
		t.Errorf("status %v", info.Status)
	}
	if fi, err := os.Stat(logDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("log directory: %v %v", fi, err)
	}
}
