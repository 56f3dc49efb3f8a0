package files

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/files/glob"
)

// copyBufferSize is the buffer of file copies that cannot use
// copy_file_range or splice (tar members, HTTP bodies).
const copyBufferSize = 1 << 20

// ErrBadArchive: an entry of an imported archive is malformed or would
// land outside the target directory.
var ErrBadArchive = errors.New("bad archive entry")

// ExportOptions tune Export.
type ExportOptions struct {
	// Exclude drops matching paths (relative to the directory) and does
	// not enter matching directories.
	Exclude *glob.Set
	// OneFileSystem stays on the directory's own file system, as tar
	// --one-file-system does: a directory on which another file system
	// is mounted (a volume, a bucket, a restored backup) is archived as
	// an empty directory, and nothing below it.
	OneFileSystem bool
}

// Export writes the tree below the directory dir to w as a tar stream:
// names relative to dir, owners, modes and modification times kept,
// symlinks as symlinks, hard links as links. It does not enter /proc,
// /sys or the agent's mounts, and skips sockets. A file that shrinks while
// it is read is padded with zeros to the size its header announced; one
// that grows is cut there.
func (f *FS) Export(ctx context.Context, dir string, w io.Writer, o ExportOptions) error {
	fd, err := f.open("export", dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	e := &exporter{ctx: ctx, f: f, tw: tar.NewWriter(w), o: o, links: map[fileID]string{}, buf: make([]byte, copyBufferSize)}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return pathErr("export", dir, err)
	}
	e.dev = st.Dev
	if err := e.walk(fd, ""); err != nil {
		return pathErr("export", dir, err)
	}
	return e.tw.Close()
}

type exporter struct {
	ctx   context.Context
	f     *FS
	tw    *tar.Writer
	o     ExportOptions
	links map[fileID]string // first name of each multiply-linked file
	buf   []byte
	dev   uint64 // the device of the exported directory's file system
}

// walk archives the entries of the directory fd (which it closes).
func (e *exporter) walk(fd int, rel string) error {
	dir := os.NewFile(uintptr(fd), rel)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		name := path.Join(rel, n)
		if e.o.Exclude.Match(name) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // gone meanwhile
		}
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: time.Unix(st.Mtim.Unix()),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
			if err := e.tw.WriteHeader(hdr); err != nil {
				return err
			}
			if e.o.OneFileSystem && st.Dev != e.dev {
				// A mount point (a directory's own st_dev is its file
				// system's: on an overlay too, unlike a file's).
				continue
			}
			child, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				continue
			}
			if !e.f.enterable(child) {
				unix.Close(child)
				continue
			}
			if err := e.walk(child, name); err != nil {
				return err
			}
		case unix.S_IFREG:
			if err := e.file(fd, n, hdr, &st); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := readlinkat(fd, n)
			if err != nil {
				continue
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
			if err := e.tw.WriteHeader(hdr); err != nil {
				return err
			}
		case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = map[uint32]byte{unix.S_IFIFO: tar.TypeFifo, unix.S_IFCHR: tar.TypeChar, unix.S_IFBLK: tar.TypeBlock}[st.Mode&unix.S_IFMT]
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
			if err := e.tw.WriteHeader(hdr); err != nil {
				return err
			}
		}
	}
	return nil
}

// file archives the regular file n under dirfd.
func (e *exporter) file(dirfd int, n string, hdr *tar.Header, st *unix.Stat_t) error {
	id := fileID{st.Dev, st.Ino}
	if st.Nlink > 1 {
		if first, ok := e.links[id]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return e.tw.WriteHeader(hdr)
		}
	}
	fd, err := unix.Openat(dirfd, n, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil // gone or unreadable: not part of the snapshot
	}
	file := os.NewFile(uintptr(fd), n)
	defer file.Close()
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil || now.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil // swapped for something else meanwhile
	}
	if st.Nlink > 1 {
		e.links[id] = hdr.Name
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, now.Size
	if err := e.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n64, err := io.CopyBuffer(onlyWriter{e.tw}, io.LimitReader(file, now.Size), e.buf)
	if err != nil {
		return err
	}
	// Shrunk while read: pad to the announced size.
	for left := now.Size - n64; left > 0; {
		chunk := min(left, int64(len(e.buf)))
		clear(e.buf[:chunk])
		if _, err := e.tw.Write(e.buf[:chunk]); err != nil {
			return err
		}
		left -= chunk
	}
	return nil
}

// onlyWriter hides a writer's ReadFrom, so io.CopyBuffer uses the given
// buffer.
type onlyWriter struct{ io.Writer }

// ImportStats count what Import wrote.
type ImportStats struct {
	Entries int
	Bytes   int64
}

// Import unpacks the tar stream r into the directory dir (made if
// missing). Entries keep their owners, modes and times. Nothing lands
// outside dir: names with ".." are refused, and every entry is resolved
// beneath dir without following magic links or symlinks that leave it. An
// existing file or symlink is replaced; an existing directory is merged.
func (f *FS) Import(ctx context.Context, dir string, r io.Reader) (ImportStats, error) {
	var stats ImportStats
	if err := f.mkdirAll(dir, 0o755, nil); err != nil {
		return stats, pathErr("import", dir, err)
	}
	fd, err := f.open("import", dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return stats, err
	}
	defer unix.Close(fd)
	im := &importer{f: f, root: fd, buf: make([]byte, copyBufferSize)}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return stats, fmt.Errorf("%w: %w", ErrBadArchive, err)
		}
		n, err := im.entry(hdr, tr)
		if err != nil {
			return stats, pathErr("import", path.Join(dir, hdr.Name), err)
		}
		if n >= 0 {
			stats.Entries++
			stats.Bytes += n
		}
	}
	// Directory times last: adding their entries changed them.
	for _, d := range im.dirs {
		if dfd, err := im.beneath(d.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW); err == nil {
			unix.UtimesNanoAt(dfd, "", times(d.mtime), unix.AT_EMPTY_PATH)
			unix.Close(dfd)
		}
	}
	return stats, nil
}

type importer struct {
	f    *FS
	root int
	buf  []byte
	dirs []dirTime
}

type dirTime struct {
	name  string
	mtime time.Time
}

// maxDirTimes bounds the directories whose times are restored at the end.
const maxDirTimes = 1 << 20

func times(mtime time.Time) []unix.Timespec {
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return []unix.Timespec{ts, ts}
}

// beneath resolves rel under the import root, refusing anything that
// would leave it.
func (im *importer) beneath(rel string, flags int) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(im.root, rel, &how)
		if (err == unix.EAGAIN && i < maxAgain) || err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, err
		}
		if err := im.f.guard(fd); err != nil {
			unix.Close(fd)
			return -1, err
		}
		return fd, nil
	}
}

// parent opens (making it if needed) the directory that will hold rel.
func (im *importer) parent(rel string) (int, error) {
	d := path.Dir(rel)
	fd, err := im.beneath(d, unix.O_PATH|unix.O_DIRECTORY)
	if !errors.Is(err, unix.ENOENT) || d == "." {
		return fd, err
	}
	pfd, err := im.parent(d)
	if err != nil {
		return -1, err
	}
	err = mkdirat(pfd, path.Base(d), 0o755, nil)
	unix.Close(pfd)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	return im.beneath(d, unix.O_PATH|unix.O_DIRECTORY)
}

// cleanName checks an archive name: relative (a leading / is dropped, as
// tar does), no "..", no NUL. "" means the root itself.
func cleanName(name string) (string, error) {
	name = strings.TrimLeft(name, "/")
	if strings.IndexByte(name, 0) >= 0 || len(name) > MaxPath {
		return "", ErrBadArchive
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", fmt.Errorf("%w: %q leaves the directory", ErrBadArchive, name)
		}
	}
	name = path.Clean(name)
	if name == "." {
		return "", nil
	}
	return name, nil
}

// entry creates one archive entry; it returns the content bytes written,
// or -1 for an entry that was skipped.
func (im *importer) entry(hdr *tar.Header, tr io.Reader) (int64, error) {
	name, err := cleanName(hdr.Name)
	if err != nil {
		return 0, err
	}
	if name == "" {
		return -1, nil // the directory itself
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
	default:
		return -1, nil // PAX globals and the like
	}
	pfd, err := im.parent(name)
	if err != nil {
		return 0, err
	}
	defer unix.Close(pfd)
	base := path.Base(name)
	var old unix.Stat_t
	exists := unix.Fstatat(pfd, base, &old, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists {
		if err := im.f.guardEntry(&old); err != nil {
			return 0, err
		}
	}
	// Replace what is in the way (unlinked first, so a hard link elsewhere
	// keeps its content), except a directory, which is merged into (a
	// directory entry) or refused (anything else).
	if exists && hdr.Typeflag != tar.TypeDir {
		if isDir(&old) {
			return 0, unix.EISDIR
		}
		if err := unix.Unlinkat(pfd, base, 0); err != nil {
			return 0, err
		}
	}
	mode := uint32(hdr.Mode & 0o7777)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if exists && !isDir(&old) {
			if err := unix.Unlinkat(pfd, base, 0); err != nil {
				return 0, err
			}
			exists = false
		}
		if !exists {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return 0, err
			}
		}
		dfd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		defer unix.Close(dfd)
		if err := unix.Fchown(dfd, hdr.Uid, hdr.Gid); err != nil {
			return 0, err
		}
		if err := unix.Fchmod(dfd, mode); err != nil {
			return 0, err
		}
		if len(im.dirs) < maxDirTimes {
			im.dirs = append(im.dirs, dirTime{name, hdr.ModTime})
		}
		return 0, nil
	case tar.TypeReg:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return 0, err
		}
		file := os.NewFile(uintptr(fd), base)
		defer file.Close()
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return 0, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return 0, ErrNotRegular
		}
		n, err := io.CopyBuffer(onlyWriter{file}, io.LimitReader(tr, hdr.Size), im.buf)
		if err != nil {
			return n, err
		}
		if n != hdr.Size {
			return n, fmt.Errorf("%w: %s is cut short", ErrBadArchive, name)
		}
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return n, err
		}
		if err := unix.Fchmod(fd, mode); err != nil {
			return n, err
		}
		return n, unix.UtimesNanoAt(fd, "", times(hdr.ModTime), unix.AT_EMPTY_PATH)
	case tar.TypeSymlink:
		if strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return 0, ErrBadArchive
		}
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return 0, err
		}
		unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
		unix.UtimesNanoAt(pfd, base, times(hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW)
		return 0, nil
	case tar.TypeLink:
		target, err := cleanName(hdr.Linkname)
		if err != nil || target == "" {
			return 0, fmt.Errorf("%w: hard link to %q", ErrBadArchive, hdr.Linkname)
		}
		tfd, err := im.beneath(path.Dir(target), unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return 0, err
		}
		defer unix.Close(tfd)
		// No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
		return 0, unix.Linkat(tfd, path.Base(target), pfd, base, 0)
	case tar.TypeFifo:
		if err := unix.Mkfifoat(pfd, base, mode); err != nil {
			return 0, err
		}
		unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)
		return 0, nil
	default: // devices: only with CAP_MKNOD, which sandboxes lack
		kind := uint32(unix.S_IFCHR)
		if hdr.Typeflag == tar.TypeBlock {
			kind = unix.S_IFBLK
		}
		return 0, unix.Mknodat(pfd, base, kind|mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	}
}
