// Package hostlock owns host-wide exclusive locks named by files: a lock
// is an flock on its file, held for its holder's life, and the file goes
// away with the lock (Release) or, when its holder died, with the next
// sweep (RemoveStale). It never waits for a lock and never removes a file
// whose lock someone holds.
//
// Why files are removed at all: a lock file per name outlives its holder,
// and names unique per daemon (every test daemon has its own cgroup parent
// and nftables table) piled up in /run/lock/sandboxd by the thousands.
//
// Why removing one is safe: the remover unlinks the file while it holds
// its lock, and whoever takes a lock checks, once it holds it, that the
// file it locked is still the one at the path (same device and inode), and
// starts again when it is not. A process that opened the file before the
// unlink and locks it after the remover let go holds a lock on a file no
// one else can find: the check is what keeps it from believing it holds
// the name.
package hostlock

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Dir holds sandboxd's host-wide locks: those of the names two daemons on
// one host must not share. It is on /run, so a reboot clears it.
const Dir = "/run/lock/sandboxd"

// Path is the lock file in dir (Dir but in tests) of a daemon's name of
// one kind ("cgroup", "iface", "nft").
func Path(dir, kind, name string) string {
	return filepath.Join(dir, kind+"-"+name+".lock")
}

// ErrHeld is what Acquire returns when another process holds the lock.
var ErrHeld = errors.New("the lock is held by another process")

// maxAttempts bounds Acquire's retries: each one means the file was
// removed between its open and its lock, which takes a holder letting go
// or a sweep at that very moment.
const maxAttempts = 100

// Lock is a held lock.
type Lock struct {
	f    *os.File
	path string
}

// Acquire takes the exclusive lock named by path, creating its file (mode
// 0600, the directory must exist), and writes the caller's PID into it for
// Holder. It fails with ErrHeld, at once, when another process holds it.
func Acquire(path string) (*Lock, error) {
	for range maxAttempts {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := flockBriefly(f); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, ErrHeld
			}
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if !stillAt(f, path) {
			f.Close()
			continue
		}
		if err := errors.Join(f.Truncate(0), writeAt0(f, strconv.Itoa(os.Getpid())+"\n")); err != nil {
			f.Close()
			return nil, err
		}
		return &Lock{f: f, path: path}, nil
	}
	return nil, fmt.Errorf("locking %s: its file was replaced %d times in a row", path, maxAttempts)
}

// Release removes the lock's file and lets go of the lock, in that order.
func (l *Lock) Release() {
	os.Remove(l.path)
	l.f.Close()
}

// Held reports whether someone holds the lock at path (false when its
// file does not exist). It takes the lock for a moment when no one holds
// it, as RemoveStale does: Acquire waits such a moment out.
func Held(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
}

// RemoveStale removes the lock file at path unless someone holds its
// lock, and reports whether it did.
func RemoveStale(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil || !stillAt(f, path) {
		return false
	}
	return os.Remove(path) == nil
}

// RemoveStaleIn removes every file of dir whose name matches pattern
// (filepath.Match) and whose lock no one holds: the locks of holders that
// died without releasing them. It returns how many it removed.
func RemoveStaleIn(dir, pattern string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if ok, _ := filepath.Match(pattern, e.Name()); ok && e.Type().IsRegular() && RemoveStale(filepath.Join(dir, e.Name())) {
			n++
		}
	}
	return n
}

// Holder returns the PID written in the lock file at path, or "".
func Holder(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}

// flockBriefly takes f's lock, trying again for a little while: a sweep
// (RemoveStale) or a probe (Held) holds a free lock for a moment, which
// must not make its taker refuse to start.
func flockBriefly(f *os.File) error {
	var err error
	for range 5 {
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

// stillAt reports whether f is the file at path.
func stillAt(f *os.File, path string) bool {
	held, err := f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return err == nil && os.SameFile(held, now)
}

func writeAt0(f *os.File, s string) error {
	_, err := f.WriteAt([]byte(s), 0)
	return err
}
