package session

import (
	"errors"
	"os"
	"testing"
)

func TestCurrentDirFollowsTheShell(t *testing.T) {
	m := newTestManager(t)
	s, err := m.Get(Default)
	if err != nil {
		t.Fatal(err)
	}
	if dir, err := s.CurrentDir(); err != nil || dir != m.cfg.Workspace {
		t.Errorf("before the shell starts: %q, %v; want %q", dir, err, m.cfg.Workspace)
	}
	sub := t.TempDir()
	mustRun(t, s, Command{Text: "cd " + sub})
	if dir, err := s.CurrentDir(); err != nil || dir != sub {
		t.Errorf("after cd: %q, %v; want %q", dir, err, sub)
	}
	os.Remove(sub)
	if _, err := s.CurrentDir(); !errors.Is(err, ErrNoCwd) {
		t.Errorf("after rmdir: %v, want ErrNoCwd", err)
	}
	// A session created with its own directory starts there.
	own := t.TempDir()
	s2, err := m.Create("own", Options{Cwd: own})
	if err != nil {
		t.Fatal(err)
	}
	if dir, _ := s2.CurrentDir(); dir != own {
		t.Errorf("new session: %q, want %q", dir, own)
	}
}
