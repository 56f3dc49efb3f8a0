package session

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// TestStatusFIFOReplaced: a command that removes, renames or replaces the
// session's status FIFO fails at once with ErrStatusLost (which is
// ErrTerminated to callers), not at its timeout, and the next command
// runs in a fresh shell; as root and as the session's user.
func TestStatusFIFOReplaced(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the session user's shell is started with its credentials")
	}
	users := func(c *Config) {
		etc := filepath.Join(t.TempDir(), "etc")
		os.MkdirAll(etc, 0o755)
		os.WriteFile(filepath.Join(etc, "passwd"), []byte("root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644)
		os.WriteFile(filepath.Join(etc, "group"), []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
		c.Users = &user.DB{Etc: etc, HomeRoot: t.TempDir()}
	}
	m := newTestManager(t, users)
	os.Chmod(m.cfg.RunDir, 0o711) // the session user reaches its own directory
	cases := map[string]string{
		"removed":            `rm "$D/s"`,
		"replaced by a file": `rm "$D/s"; : > "$D/s"`,
		"replaced by a FIFO": `rm "$D/s"; mkfifo "$D/s"`,
		"renamed":            `mv "$D/s" "$D/s2"`,
		"renamed over":       `: > "$D/x"; mv "$D/x" "$D/s"`,
	}
	for _, who := range []string{"", "nobody"} {
		s, err := m.Create("guard"+who, Options{User: who, Cwd: "/tmp"})
		if err != nil {
			t.Fatal(err)
		}
		tests := cases
		if who != "" {
			tests = map[string]string{"made unwritable": `chmod 0400 "$D/s"`}
			for k, v := range cases {
				tests[k] = v
			}
		}
		for name, text := range tests {
			t.Run(who+"/"+name, func(t *testing.T) {
				mustRun(t, s, Command{Text: "X=kept"})
				start := time.Now()
				c := &capture{}
				_, err := s.Exec(context.Background(), Command{Text: text + "; sleep 0.2; echo after", Env: map[string]string{"D": s.dir}, Timeout: 120 * time.Second}, c)
				// "At once" is told from the timeout by a bound far from
				// what a loaded host adds.
				if took := time.Since(start); !errors.Is(err, ErrStatusLost) || !errors.Is(err, ErrTerminated) || took > 30*time.Second {
					t.Fatalf("got %v after %s (stderr %q), want ErrStatusLost at once", err, took.Round(time.Millisecond), c.stderr.String())
				}
				if got := mustRun(t, s, Command{Text: `echo "${X-fresh}"`}); got != "fresh\n" {
					t.Errorf("the next command ran in %q, want a fresh shell", got)
				}
			})
		}
		// Touching the FIFO without breaking it is no loss.
		mustRun(t, s, Command{Text: "X=kept"})
		mustRun(t, s, Command{Text: `touch "$D/s"; ln "$D/s" "$D/s3"; rm "$D/s3"; chmod 0600 "$D/s"`, Env: map[string]string{"D": s.dir}})
		if got := mustRun(t, s, Command{Text: `echo "${X-fresh}"`}); got != "kept\n" {
			t.Errorf("after touching the FIFO: %q, want the same shell", got)
		}
	}
}
