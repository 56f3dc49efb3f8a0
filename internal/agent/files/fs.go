// Package files owns the agent's file operations on the sandbox's file
// system: reading and writing (streamed, never whole files in memory),
// directories, renames, listings, and tar export and import. Every path it
// is given is a path in the sandbox; it resolves each one itself, safely,
// and never hands a path string to a plain open(2).
//
// It knows nothing of HTTP or of the wire format (the agent edge converts)
// and never logs file contents.
//
// Why openat2 and not os.Root. The agent runs inside the sandbox, so "/" is
// already the sandbox's root and a symbolic link to /etc/shadow is the
// sandbox's own /etc/shadow. What the agent has that user code does not is
// its own process: /proc/self (= /proc/1) is the agent's memory, environment
// and file descriptors, reachable by a symlink to /proc/1/root, /proc/self/fd
// or /proc/self/mem. Every open here goes through openat2(2) with
// RESOLVE_IN_ROOT (absolute symlinks resolve against FS's root, ".." stops
// there) and RESOLVE_NO_MAGICLINKS (no /proc/*/fd, /proc/*/root, /proc/*/cwd
// or /proc/*/exe jumps), and every descriptor that is then used is checked:
// nothing on a procfs is served, and nothing on the agent's private mounts
// under /.sandboxd. os.Root would refuse absolute symlinks altogether, which
// a real root file system is full of.
//
// Why descriptors all the way. A path checked and then opened can be
// swapped for a symlink in between. Here a path is resolved once, into a
// descriptor, and what follows (fstat, the write, unlinkat under a parent
// descriptor, walking a tree by openat of each child with O_NOFOLLOW) uses
// that descriptor, so a swap during the call changes nothing about where it
// lands.
package files

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/mountinfo"
)

// Errors of this package; the agent edge maps them to codes. Errors from
// the kernel come as *PathError wrapping a unix.Errno.
var (
	// ErrInvalidPath: empty, not absolute, too long, or with a NUL byte.
	ErrInvalidPath = errors.New("invalid path")
	// ErrForbidden: the path reaches /proc or the agent's own files.
	ErrForbidden = errors.New("the path reaches the agent's own files or /proc, which the file API does not serve")
	// ErrNotRegular: a read or write named a FIFO, socket or device.
	ErrNotRegular = errors.New("not a regular file")
	// ErrRoot: the call would delete or move the root directory.
	ErrRoot = errors.New("refusing to delete or move /")
	// ErrCrossDevice: a directory cannot be moved to another file system.
	ErrCrossDevice = errors.New("cannot move a directory to another file system")
)

// PathError records the operation and the sandbox path of a failure.
type PathError struct {
	Op   string
	Path string
	Err  error
}

func (e *PathError) Error() string { return e.Op + " " + e.Path + ": " + e.Err.Error() }
func (e *PathError) Unwrap() error { return e.Err }

func pathErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	var pe *PathError
	if errors.As(err, &pe) {
		return err
	}
	return &PathError{Op: op, Path: p, Err: err}
}

// resolveFlags is how every path is resolved: inside the root, no magic
// links.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// maxAgain bounds the retries of openat2 when the kernel answers EAGAIN
// (a rename or mount raced a ".." lookup under RESOLVE_IN_ROOT).
const maxAgain = 64

// FS is the sandbox's file system as the agent serves it.
type FS struct {
	root     int    // O_PATH descriptor of the root directory
	rootPath string // what Open was given
	// private are the mount IDs of the agent's own mounts (under
	// /.sandboxd), and privateDir the device and inode of /.sandboxd:
	// found once, by Learn.
	learned    sync.Once
	private    map[uint64]bool
	privateDir *fileID
}

type fileID struct{ dev, ino uint64 }

// PrivateDir is where the daemon mounts the agent's binary, socket and
// cgroups inside the sandbox.
const PrivateDir = "/.sandboxd"

// Open returns the file system rooted at root: "/" in the agent, a
// directory in tests (then every path is relative to it, as in a chroot).
// The agent's private mounts below PrivateDir, which no call may touch, are
// found when the first call checks a descriptor (or at Learn), not here:
// reading the mount table and opening each mount costs about 25 system
// calls, which on gVisor are trips through its Sentry on the way of a cold
// start's first answer (bench/results/gvisor.txt, fifteenth session). It
// finds then the mounts it found at the agent's start: the daemon makes
// them before the agent starts, and nothing in the sandbox can unmount or
// cover them (no sandbox process has CAP_SYS_ADMIN); one the daemon added
// below PrivateDir in between is refused too.
func Open(root string) (*FS, error) {
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening root %s: %w", root, err)
	}
	return &FS{root: fd, rootPath: root}, nil
}

// Learn finds the agent's private mounts, once: the first call that
// checks a descriptor does, and the agent calls it once its first call is
// answered, so that later calls find them known.
func (f *FS) Learn() { f.learned.Do(f.findPrivate) }

func (f *FS) findPrivate() {
	root := f.rootPath
	f.private = map[uint64]bool{}
	if dfd, err := f.openat2(PrivateDir, unix.O_PATH|unix.O_NOFOLLOW, 0); err == nil {
		var st unix.Stat_t
		if unix.Fstat(dfd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			f.privateDir = &fileID{dev: st.Dev, ino: st.Ino}
		}
		unix.Close(dfd)
	}
	for _, mp := range privateMounts(root) {
		if mfd, err := f.openat2(mp, unix.O_PATH|unix.O_NOFOLLOW, 0); err == nil {
			if id, err := mountID(mfd); err == nil {
				f.private[id] = true
			}
			unix.Close(mfd)
		}
	}
}

// privateMounts returns the mount points below PrivateDir, as paths
// relative to root, from the agent's mountinfo.
func privateMounts(root string) []string {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer mi.Close()
	prefix := strings.TrimSuffix(root, "/") + PrivateDir + "/"
	var out []string
	sc := bufio.NewScanner(mi)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := mountinfo.Unescape(f[4])
		if strings.HasPrefix(mp, prefix) {
			out = append(out, PrivateDir+"/"+strings.TrimPrefix(mp, prefix))
		}
	}
	return out
}

// Close releases the root descriptor.
func (f *FS) Close() error { return unix.Close(f.root) }

// Clean validates a sandbox path and returns it cleaned. It must be
// absolute; relative paths are joined with a session's directory by the
// caller first.
func Clean(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("%w: the path is empty", ErrInvalidPath)
	case len(p) > MaxPath:
		return "", fmt.Errorf("%w: the path is %d bytes long; at most %d are allowed", ErrInvalidPath, len(p), MaxPath)
	case strings.IndexByte(p, 0) >= 0:
		return "", fmt.Errorf("%w: the path contains a NUL byte", ErrInvalidPath)
	case !path.IsAbs(p):
		return "", fmt.Errorf("%w: the path %q is not absolute", ErrInvalidPath, p)
	}
	return path.Clean(p), nil
}

// MaxPath is the longest path accepted (PATH_MAX less the NUL).
const MaxPath = unix.PathMax - 1

// openat2 resolves p (absolute, clean) inside the root.
func (f *FS) openat2(p string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolveFlags}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(f.root, p, &how)
		if (err == unix.EAGAIN && i < maxAgain) || err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// open resolves p, opens it with flags and checks the result is not off
// limits. The caller owns the descriptor.
func (f *FS) open(op, p string, flags int, mode uint32) (int, error) {
	fd, err := f.openat2(p, flags, mode)
	if err != nil {
		return -1, pathErr(op, p, err)
	}
	if err := f.guard(fd); err != nil {
		unix.Close(fd)
		return -1, pathErr(op, p, err)
	}
	return fd, nil
}

// guard refuses a descriptor on a procfs (the agent's own process is
// there), on one of the agent's private mounts, or naming /.sandboxd.
func (f *FS) guard(fd int) error {
	f.Learn()
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return err
	}
	if sfs.Type == unix.PROC_SUPER_MAGIC {
		return ErrForbidden
	}
	if len(f.private) > 0 {
		id, err := mountID(fd)
		if err != nil {
			return err
		}
		if f.private[id] {
			return ErrForbidden
		}
	}
	if f.privateDir != nil {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if st.Dev == f.privateDir.dev && st.Ino == f.privateDir.ino {
			return ErrForbidden
		}
	}
	return nil
}

func mountID(fd int) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	return stx.Mnt_id, nil
}

// openParent opens the directory that holds p, for an *at call on the
// last element, which is never followed. p must not be "/".
func (f *FS) openParent(op, p string) (dirfd int, name string, err error) {
	dir, name := path.Split(p)
	fd, err := f.open(op, path.Clean(dir), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", err
	}
	return fd, name, nil
}

// isDir reports whether st is a directory.
func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// fileMode converts a stat mode to an fs.FileMode.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// OpenPath resolves p like every other call and returns an O_PATH
// descriptor of it (following a final symlink), for callers that hand the
// kernel an object rather than a path (inotify, through /proc/self/fd).
func (f *FS) OpenPath(p string) (fd int, mode fs.FileMode, err error) {
	fd, err = f.open("open", p, unix.O_PATH, 0)
	if err != nil {
		return -1, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, 0, pathErr("open", p, err)
	}
	return fd, fileMode(st.Mode), nil
}

// Enterable reports whether a walk may descend into the directory fd: it
// is not off limits, and not a procfs or sysfs.
func (f *FS) Enterable(fd int) bool { return f.enterable(fd) }
