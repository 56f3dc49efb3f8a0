package files

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// Entry describes one file, without following it if it is a symlink.
type Entry struct {
	Name string
	// Path is the entry's absolute path in the sandbox; Rel is relative
	// to the directory listed ("" for Stat).
	Path, Rel string
	Mode      fs.FileMode
	Size      int64
	ModTime   time.Time
	UID, GID  int
	// Target is a symlink's target.
	Target string
	// Readable, Writable, Executable are access(2)'s answers for the
	// agent (root).
	Readable, Writable, Executable bool
	// Dev and Ino identify the file.
	Dev, Ino uint64
}

func newEntry(name, abs, rel string, st *unix.Stat_t) Entry {
	return Entry{
		Name: name, Path: abs, Rel: rel,
		Mode:    fileMode(st.Mode),
		Size:    st.Size,
		ModTime: time.Unix(st.Mtim.Unix()).UTC(),
		UID:     int(st.Uid), GID: int(st.Gid),
		Dev: st.Dev, Ino: st.Ino,
	}
}

// access fills in the permissions of e, the entry name under dirfd ("" and
// AT_EMPTY_PATH for dirfd itself).
func access(e *Entry, dirfd int, name string) {
	flags := unix.AT_EACCESS | unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	e.Readable = unix.Faccessat(dirfd, name, unix.R_OK, flags) == nil
	e.Writable = unix.Faccessat(dirfd, name, unix.W_OK, flags) == nil
	e.Executable = unix.Faccessat(dirfd, name, unix.X_OK, flags) == nil
}

// Stat describes p without following it if it is a symlink.
func (f *FS) Stat(p string) (Entry, error) {
	fd, err := f.open("stat", p, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return Entry{}, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Entry{}, pathErr("stat", p, err)
	}
	e := newEntry(path.Base(p), p, "", &st)
	if e.Mode&fs.ModeSymlink != 0 {
		e.Target, _ = readlinkat(fd, "")
	}
	access(&e, fd, "")
	return e, nil
}

// Exists reports whether p exists, following symlinks, and what it is.
func (f *FS) Exists(p string) (bool, fs.FileMode, error) {
	fd, err := f.open("exists", p, unix.O_PATH, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, 0, pathErr("exists", p, err)
	}
	return true, fileMode(st.Mode), nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; size <= unix.PathMax*2; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
	return "", unix.ENAMETOOLONG
}

// OpenRead opens the regular file p for reading.
func (f *FS) OpenRead(p string) (*os.File, Entry, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer; it is
	// refused below anyway, and means nothing for regular files.
	fd, err := f.open("read", p, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, Entry{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, Entry{}, pathErr("read", p, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
	case unix.S_IFDIR:
		unix.Close(fd)
		return nil, Entry{}, pathErr("read", p, unix.EISDIR)
	default:
		unix.Close(fd)
		return nil, Entry{}, pathErr("read", p, ErrNotRegular)
	}
	return os.NewFile(uintptr(fd), p), newEntry(path.Base(p), p, "", &st), nil
}

// Owner is who owns the files and directories a call creates; a nil
// *Owner leaves them to the agent (root).
type Owner struct{ UID, GID int }

// CreateOptions tune Create.
type CreateOptions struct {
	// CreateParents makes missing parent directories (mode 0755).
	CreateParents bool
	// Perm, when SetPerm, is the file's mode (permission, setuid, setgid
	// and sticky bits). A new file otherwise gets 0644, an existing one
	// keeps its mode.
	Perm    fs.FileMode
	SetPerm bool
	// UID and GID set the owner; -1 leaves it.
	UID, GID int
	// Owner, when UID and GID are both -1, owns the file if this call
	// creates it, and the parent directories it makes.
	Owner *Owner
}

// Create opens the regular file p for writing, truncated to zero, making
// it if it does not exist. created says whether it did not exist. Writing
// through a symlink writes its target (inside the sandbox).
//
// Why not one openat2 with O_CREAT: the kernel would make the file before
// the descriptor could be checked, so a symlink into /proc or the agent's
// mounts would leave a file there even though the call fails. A new file is
// therefore only ever made by O_CREAT|O_EXCL under a parent directory that
// was resolved and checked first; an existing one is opened without
// O_CREAT and checked before it is truncated; and a dangling symlink is
// followed by hand, one link at a time, to a path that gets the same
// treatment.
func (f *FS) Create(p string, o CreateOptions) (file *os.File, created bool, err error) {
	return f.create(p, o, 0)
}

// maxLinks bounds the dangling symlinks Create follows, as the kernel's
// own limit does.
const maxLinks = 40

func (f *FS) create(p string, o CreateOptions, links int) (*os.File, bool, error) {
	if p == "/" {
		return nil, false, pathErr("write", p, unix.EISDIR)
	}
	if o.CreateParents {
		if err := f.mkdirAll(path.Dir(p), 0o755, o.Owner); err != nil {
			return nil, false, pathErr("write", p, err)
		}
	}
	dirfd, name, err := f.openParent("write", p)
	if err != nil {
		return nil, false, err
	}
	defer unix.Close(dirfd)
	const base = unix.O_WRONLY | unix.O_NOCTTY | unix.O_NONBLOCK | unix.O_CLOEXEC
	created := false
	fd := -1
	for attempt := 0; fd < 0; attempt++ {
		fd, err = unix.Openat(dirfd, name, base|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o644)
		if err == nil {
			created = true
			break
		}
		if !errors.Is(err, unix.EEXIST) {
			return nil, false, pathErr("write", p, err)
		}
		fd, err = f.open("write", p, base, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.ENOENT) || attempt > 2 {
			return nil, false, err
		}
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			// A dangling symlink: create its target, resolved like any
			// other path.
			target, err := readlinkat(dirfd, name)
			if err != nil {
				return nil, false, pathErr("write", p, err)
			}
			if links >= maxLinks {
				return nil, false, pathErr("write", p, unix.ELOOP)
			}
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			o.CreateParents = false
			return f.create(path.Clean(target), o, links+1)
		}
		// Removed between the two opens: try again.
	}
	fail := func(err error) (*os.File, bool, error) {
		unix.Close(fd)
		return nil, false, pathErr("write", p, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fail(ErrNotRegular)
	}
	// Truncate only now that the descriptor is known to be a regular
	// file the API may write.
	if !created {
		if err := unix.Ftruncate(fd, 0); err != nil {
			return fail(err)
		}
	}
	if o.UID < 0 && o.GID < 0 && created && o.Owner != nil {
		o.UID, o.GID = o.Owner.UID, o.Owner.GID
	}
	if o.UID >= 0 || o.GID >= 0 {
		if err := unix.Fchown(fd, o.UID, o.GID); err != nil {
			return fail(err)
		}
	}
	// chown clears setuid and setgid, so the mode comes after it.
	switch {
	case o.SetPerm:
		err = unix.Fchmod(fd, unixPerm(o.Perm))
	case created:
		err = unix.Fchmod(fd, 0o644)
	case o.UID >= 0 || o.GID >= 0:
		err = unix.Fchmod(fd, st.Mode&0o7777)
	}
	if err != nil {
		return fail(err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return fail(err)
	}
	return os.NewFile(uintptr(fd), p), created, nil
}

// unixPerm converts the permission and special bits of m to a stat mode.
func unixPerm(m fs.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		out |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		out |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		out |= unix.S_ISVTX
	}
	return out
}

// Mkdir makes the directory p with mode perm, owned by owner (nil: root).
// Recursive makes missing parents too (mode 0755) and accepts an existing
// directory.
func (f *FS) Mkdir(p string, perm fs.FileMode, recursive bool, owner *Owner) error {
	if recursive {
		return pathErr("mkdir", p, f.mkdirAll(p, perm, owner))
	}
	if p == "/" {
		return pathErr("mkdir", p, unix.EEXIST)
	}
	dirfd, name, err := f.openParent("mkdir", p)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	return pathErr("mkdir", p, mkdirat(dirfd, name, perm, owner))
}

// mkdirat makes name under dirfd with exactly perm (the umask is undone
// on the new directory itself, never through a path), owned by owner.
func mkdirat(dirfd int, name string, perm fs.FileMode, owner *Owner) error {
	if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
		return err
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if owner != nil {
		if err := unix.Fchown(fd, owner.UID, owner.GID); err != nil {
			return err
		}
	}
	return unix.Fchmod(fd, unixPerm(perm))
}

// mkdirAll makes p and its missing parents. Existing components are
// followed (symlinks to directories included); new ones get perm.
func (f *FS) mkdirAll(p string, perm fs.FileMode, owner *Owner) error {
	fd, err := f.open("mkdir", p, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err == nil {
		unix.Close(fd)
		return nil
	}
	if !errors.Is(err, unix.ENOENT) || p == "/" {
		return err
	}
	if err := f.mkdirAll(path.Dir(p), perm, owner); err != nil {
		return err
	}
	dirfd, name, err := f.openParent("mkdir", p)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	err = mkdirat(dirfd, name, perm, owner)
	if errors.Is(err, unix.EEXIST) {
		// Made by someone else meanwhile; fine if it is a directory.
		var st unix.Stat_t
		if unix.Fstatat(dirfd, name, &st, 0) == nil && isDir(&st) {
			return nil
		}
	}
	return err
}

// Remove deletes p (a symlink itself, never its target). A directory needs
// recursive (unix.EISDIR otherwise); then everything below it goes, without
// following symlinks and without entering other mounts.
func (f *FS) Remove(p string, recursive bool) error {
	if p == "/" {
		return pathErr("delete", p, ErrRoot)
	}
	dirfd, name, err := f.openParent("delete", p)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return pathErr("delete", p, err)
	}
	if err := f.guardEntry(&st); err != nil {
		return pathErr("delete", p, err)
	}
	if !isDir(&st) {
		return pathErr("delete", p, unix.Unlinkat(dirfd, name, 0))
	}
	if !recursive {
		return pathErr("delete", p, unix.EISDIR)
	}
	return pathErr("delete", p, f.removeTree(dirfd, name))
}

// guardEntry refuses /.sandboxd itself as the object of a delete or move.
func (f *FS) guardEntry(st *unix.Stat_t) error {
	f.Learn()
	if f.privateDir != nil && st.Dev == f.privateDir.dev && st.Ino == f.privateDir.ino {
		return ErrForbidden
	}
	return nil
}

// removeTree removes the directory name under dirfd and everything in it.
func (f *FS) removeTree(dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	dir := os.NewFile(uintptr(fd), name)
	defer dir.Close()
	if err := f.guard(fd); err != nil {
		return err
	}
	parentMnt, err := mountID(dirfd)
	if err != nil {
		return err
	}
	if mnt, err := mountID(fd); err != nil {
		return err
	} else if mnt != parentMnt {
		return unix.EBUSY // a mount point: its content is not ours to delete
	}
	for {
		// Read a batch from the start, delete it, and read again: removing
		// entries while reading a directory may skip some.
		if _, err := dir.Seek(0, io.SeekStart); err != nil {
			return err
		}
		names, err := dir.Readdirnames(1024)
		if errors.Is(err, io.EOF) || len(names) == 0 {
			break
		}
		if err != nil {
			return err
		}
		for _, n := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return err
			}
			if isDir(&st) {
				err = f.removeTree(fd, n)
			} else {
				err = unix.Unlinkat(fd, n, 0)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// Rename renames oldp to newp exactly. Without overwrite an existing newp
// is unix.EEXIST.
func (f *FS) Rename(oldp, newp string, overwrite bool) error {
	if oldp == "/" || newp == "/" {
		return pathErr("rename", oldp, ErrRoot)
	}
	odir, oname, err := f.openParent("rename", oldp)
	if err != nil {
		return err
	}
	defer unix.Close(odir)
	ndir, nname, err := f.openParent("rename", newp)
	if err != nil {
		return err
	}
	defer unix.Close(ndir)
	return pathErr("rename", oldp, f.renameat(odir, oname, ndir, nname, overwrite))
}

func (f *FS) renameat(odir int, oname string, ndir int, nname string, overwrite bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(odir, oname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if err := f.guardEntry(&st); err != nil {
		return err
	}
	if err := unix.Fstatat(ndir, nname, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		if err := f.guardEntry(&st); err != nil {
			return err
		}
	}
	var flags uint
	if !overwrite {
		flags = unix.RENAME_NOREPLACE
	}
	err := unix.Renameat2(odir, oname, ndir, nname, flags)
	if errors.Is(err, unix.EINVAL) && flags != 0 {
		// A file system without RENAME_NOREPLACE: check, then rename.
		if unix.Fstatat(ndir, nname, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return unix.EEXIST
		}
		err = unix.Renameat(odir, oname, ndir, nname)
	}
	if errors.Is(err, unix.ENOTEMPTY) {
		return unix.EEXIST
	}
	return err
}

// Move moves src to dst like mv: an existing directory dst (symlinks
// followed) receives src under its own name. Across file systems a file or
// symlink is copied and the original removed; a directory is refused. It
// returns the final path.
func (f *FS) Move(src, dst string, overwrite bool) (string, error) {
	if src == "/" {
		return "", pathErr("move", src, ErrRoot)
	}
	if fd, err := f.open("move", dst, unix.O_PATH|unix.O_DIRECTORY, 0); err == nil {
		unix.Close(fd)
		dst = path.Join(dst, path.Base(src))
	}
	if dst == "/" {
		return "", pathErr("move", src, ErrRoot)
	}
	odir, oname, err := f.openParent("move", src)
	if err != nil {
		return "", err
	}
	defer unix.Close(odir)
	ndir, nname, err := f.openParent("move", dst)
	if err != nil {
		return "", err
	}
	defer unix.Close(ndir)
	err = f.renameat(odir, oname, ndir, nname, overwrite)
	if errors.Is(err, unix.EXDEV) {
		err = f.copyAcross(odir, oname, ndir, nname, overwrite)
	}
	return dst, pathErr("move", src, err)
}

// copyAcross moves a file or symlink to another file system by copying it
// and removing the original.
func (f *FS) copyAcross(odir int, oname string, ndir int, nname string, overwrite bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(odir, oname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if !overwrite {
		var dst unix.Stat_t
		if unix.Fstatat(ndir, nname, &dst, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return unix.EEXIST
		}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := readlinkat(odir, oname)
		if err != nil {
			return err
		}
		if overwrite {
			unix.Unlinkat(ndir, nname, 0)
		}
		if err := unix.Symlinkat(target, ndir, nname); err != nil {
			return err
		}
		unix.Fchownat(ndir, nname, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
	case unix.S_IFREG:
		in, err := unix.Openat(odir, oname, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		src := os.NewFile(uintptr(in), oname)
		defer src.Close()
		flags := unix.O_WRONLY | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_TRUNC
		if !overwrite {
			flags |= unix.O_EXCL
		}
		out, err := unix.Openat(ndir, nname, flags, 0o600)
		if err != nil {
			return err
		}
		dst := os.NewFile(uintptr(out), nname)
		_, err = io.Copy(dst, src)
		if err == nil {
			err = dst.Chown(int(st.Uid), int(st.Gid))
		}
		if err == nil {
			err = unix.Fchmod(out, st.Mode&0o7777)
		}
		if err == nil {
			err = unix.Futimes(out, []unix.Timeval{unix.NsecToTimeval(st.Atim.Nano()), unix.NsecToTimeval(st.Mtim.Nano())})
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			unix.Unlinkat(ndir, nname, 0)
			return err
		}
	case unix.S_IFDIR:
		return ErrCrossDevice
	default:
		return ErrNotRegular
	}
	return unix.Unlinkat(odir, oname, 0)
}

// ListOptions tune List.
type ListOptions struct {
	Recursive bool
	// Hidden lists (and enters) names starting with a dot.
	Hidden bool
	// Max bounds the entries; 0 means no bound.
	Max int
}

// List describes the entries of the directory p (symlinks followed to
// reach it), recursively if asked: pre-order, each directory's entries
// sorted by name. Symlinks are not followed below p, and directories on a
// procfs, a sysfs or the agent's mounts are listed but not entered.
// truncated is set when Max stopped the listing.
func (f *FS) List(p string, o ListOptions) (entries []Entry, truncated bool, err error) {
	fd, err := f.open("list", p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, false, err
	}
	l := &lister{f: f, o: o}
	err = l.walk(fd, p, "")
	return l.out, l.truncated, pathErr("list", p, err)
}

type lister struct {
	f         *FS
	o         ListOptions
	out       []Entry
	truncated bool
}

// walk lists the directory fd (which it closes) at abs, rel.
func (l *lister) walk(fd int, abs, rel string) error {
	dir := os.NewFile(uintptr(fd), abs)
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		if !l.o.Hidden && n[0] == '.' {
			continue
		}
		if l.o.Max > 0 && len(l.out) >= l.o.Max {
			l.truncated = true
			return nil
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue // gone meanwhile
		}
		e := newEntry(n, path.Join(abs, n), path.Join(rel, n), &st)
		if e.Mode&fs.ModeSymlink != 0 {
			e.Target, _ = readlinkat(fd, n)
		}
		access(&e, fd, n)
		l.out = append(l.out, e)
		if !l.o.Recursive || !isDir(&st) {
			continue
		}
		child, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if !l.f.enterable(child) {
			unix.Close(child)
			continue
		}
		if err := l.walk(child, e.Path, e.Rel); err != nil {
			return err
		}
		if l.truncated {
			return nil
		}
	}
	return nil
}

// enterable reports whether a tree walk may descend into the directory fd:
// not off limits, not a procfs or sysfs.
func (f *FS) enterable(fd int) bool {
	if f.guard(fd) != nil {
		return false
	}
	var sfs unix.Statfs_t
	if unix.Fstatfs(fd, &sfs) != nil {
		return false
	}
	return sfs.Type != unix.SYSFS_MAGIC
}
