package session

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
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

// readlinkAs takes the user's file system identity on its own thread, and
// no other goroutine ever runs with it.
func TestReadlinkAsUsesTheIdentityOnItsThreadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: switches the file system identity")
	}
	private := filepath.Join(t.TempDir(), "root-only")
	os.Mkdir(private, 0o700)
	link := filepath.Join(private, "link")
	os.Symlink("/target", link)
	if _, err := readlinkAs(link, 12345, 12345); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("as uid 12345: %v, want permission denied", err)
	}
	if got, err := readlinkAs(link, 0, 0); err != nil || got != "/target" {
		t.Fatalf("as root: %q %v", got, err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 200 {
				readlinkAs(link, 12345, 12345)
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				if _, err := os.Readlink(link); err != nil {
					t.Errorf("a root read failed while others switched identity: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
