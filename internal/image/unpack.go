package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// OCI whiteouts (image-spec, layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// reservedDir is where sandboxd mounts the agent and its socket; layers
// cannot put anything there.
const reservedDir = ".sandboxd"

// unpackLimits bound one layer.
type unpackLimits struct {
	// budget is shared by every layer of an image: the bytes of regular
	// files still allowed. Decremented as files are written.
	budget *int64
	// maxEntries bounds the tar entries of the layer.
	maxEntries int
}

// unpackStats describe an unpacked layer.
type unpackStats struct {
	Size    int64 // bytes of regular files
	Entries int
	Skipped int // device nodes and entries under /.sandboxd
}

// errLayer builds an ErrInvalid error about entry name.
func errLayer(name, format string, args ...any) error {
	return fmt.Errorf("%w: layer entry %q: %s", ErrInvalid, name, fmt.Sprintf(format, args...))
}

// unpackLayer reads a layer tar from r into dir, an empty directory only
// this call writes to, and returns what it wrote. It keeps ownership,
// modes (setuid included), times and safe extended attributes, and turns
// OCI whiteouts into overlayfs whiteouts.
//
// Why it is safe with hostile tars: every entry is resolved below dir with
// os.Root, which refuses `..`, absolute paths and symlinks that lead out of
// dir; the entry itself is then created with *at system calls relative to
// its parent directory's descriptor, never following a symlink at the last
// component (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW), so an earlier entry cannot
// redirect a later one outside. Hard links must name a file of the same
// layer. Device nodes are dropped (the runtime provides /dev). Only
// user.* and security.capability extended attributes are kept: a trusted.*
// attribute from the tar could forge overlayfs metadata (redirects,
// metacopy) in the lower directory.
func unpackLayer(ctx context.Context, r io.Reader, dir string, lim unpackLimits) (unpackStats, error) {
	var st unpackStats
	root, err := os.OpenRoot(dir)
	if err != nil {
		return st, err
	}
	defer root.Close()
	type dirTime struct {
		name  string
		mtime time.Time
	}
	var dirTimes []dirTime
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("%w: reading layer tar: %v", ErrInvalid, err)
		}
		st.Entries++
		if st.Entries > lim.maxEntries {
			return st, fmt.Errorf("%w: a layer has more than %d entries", ErrTooLarge, lim.maxEntries)
		}
		if st.Entries%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return st, err
			}
		}
		name, err := cleanEntryName(hdr.Name)
		if err != nil {
			return st, err
		}
		if name == "." {
			// The layer's root directory: its attributes are the root's.
			if hdr.Typeflag == tar.TypeDir {
				if err := applyAttrs(root, ".", hdr, false); err != nil {
					return st, err
				}
				dirTimes = append(dirTimes, dirTime{".", hdr.ModTime})
			}
			continue
		}
		if first, _, _ := strings.Cut(name, "/"); first == reservedDir {
			st.Skipped++
			continue
		}
		parent, base := path.Split(name)
		parent = strings.TrimSuffix(parent, "/")
		if parent == "" {
			parent = "."
		}
		if base == whiteoutOpaque {
			if err := markOpaque(root, parent); err != nil {
				return st, err
			}
			continue
		}
		if target, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
			if target == "" || target == "." || target == ".." || strings.HasPrefix(target, whiteoutPrefix) {
				return st, errLayer(hdr.Name, "malformed whiteout")
			}
			if err := makeWhiteout(root, parent, target); err != nil {
				return st, err
			}
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeChar, tar.TypeBlock:
			st.Skipped++
			continue
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
		default:
			st.Skipped++
			continue
		}
		pdir, err := openParent(root, parent)
		if err != nil {
			return st, err
		}
		n, err := createEntry(root, pdir, name, base, hdr, tr, lim)
		pdir.Close()
		st.Size += n
		if err != nil {
			return st, err
		}
		if hdr.Typeflag == tar.TypeDir {
			dirTimes = append(dirTimes, dirTime{name, hdr.ModTime})
		}
	}
	// Directory times last: creating entries inside changed them. Deepest
	// first, so setting one does not disturb another.
	sort.Slice(dirTimes, func(i, j int) bool { return len(dirTimes[i].name) > len(dirTimes[j].name) })
	for _, d := range dirTimes {
		parent, base := path.Split(d.name)
		if d.name == "." {
			parent, base = ".", "."
		}
		pdir, err := root.OpenFile(cleanParent(parent), os.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			continue // replaced by a later entry
		}
		setTimes(int(pdir.Fd()), base, d.mtime)
		pdir.Close()
	}
	return st, nil
}

func cleanParent(p string) string {
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return "."
	}
	return p
}

// cleanEntryName returns the entry's path relative to the layer root, or
// an error for a path that is not below it.
func cleanEntryName(raw string) (string, error) {
	if raw == "" || len(raw) > unix.PathMax || strings.IndexByte(raw, 0) >= 0 {
		return "", errLayer(raw, "bad path")
	}
	name := path.Clean("/" + raw) // rooted: ".." cannot climb above "/"
	if strings.Contains(raw, "..") {
		// Refuse rather than silently re-root: a tar that says "../x"
		// was made to escape.
		for _, part := range strings.Split(raw, "/") {
			if part == ".." {
				return "", errLayer(raw, "path climbs out of the layer")
			}
		}
	}
	name = strings.TrimPrefix(name, "/")
	if name == "" {
		return ".", nil
	}
	return name, nil
}

// openParent opens the directory parent (creating it and its ancestors
// with mode 0755 if the tar did not list them), resolved inside root.
func openParent(root *os.Root, parent string) (*os.File, error) {
	f, err := root.OpenFile(parent, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return nil, errLayer(parent, "creating parent directory: %v", err)
		}
		f, err = root.OpenFile(parent, os.O_RDONLY|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return nil, errLayer(parent, "opening parent directory: %v", err)
	}
	return f, nil
}

// createEntry creates one entry named base in the directory pdir (name is
// its path in the layer) and returns the bytes written.
func createEntry(root *os.Root, pdir *os.File, name, base string, hdr *tar.Header, tr io.Reader, lim unpackLimits) (int64, error) {
	dfd := int(pdir.Fd())
	var existing unix.Stat_t
	exists := unix.Fstatat(dfd, base, &existing, unix.AT_SYMLINK_NOFOLLOW) == nil
	if exists {
		isDir := existing.Mode&unix.S_IFMT == unix.S_IFDIR
		if !(isDir && hdr.Typeflag == tar.TypeDir) {
			// A later entry replaces an earlier one of the same layer.
			if err := root.RemoveAll(name); err != nil {
				return 0, errLayer(name, "replacing: %v", err)
			}
			exists = false
		}
	}
	var written int64
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !exists {
			if err := unix.Mkdirat(dfd, base, 0o700); err != nil {
				return 0, errLayer(name, "mkdir: %v", err)
			}
		}
	case tar.TypeReg: // tar.Reader reports legacy TypeRegA as TypeReg
		if hdr.Size < 0 {
			return 0, errLayer(name, "negative size")
		}
		if hdr.Size > *lim.budget {
			return 0, fmt.Errorf("%w: file %q (%d bytes) exceeds what is left of the image size limit", ErrTooLarge, name, hdr.Size)
		}
		fd, err := unix.Openat(dfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return 0, errLayer(name, "create: %v", err)
		}
		f := os.NewFile(uintptr(fd), name)
		written, err = io.Copy(f, io.LimitReader(tr, hdr.Size))
		*lim.budget -= written
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return written, fmt.Errorf("writing %q: %w", name, err)
		}
		if written != hdr.Size {
			return written, errLayer(name, "truncated: %d of %d bytes", written, hdr.Size)
		}
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) >= unix.PathMax || strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return 0, errLayer(name, "bad symlink target")
		}
		// The target is stored as it is and never followed here; inside
		// the sandbox it resolves against the sandbox's root.
		if err := unix.Symlinkat(hdr.Linkname, dfd, base); err != nil {
			return 0, errLayer(name, "symlink: %v", err)
		}
	case tar.TypeLink:
		target, err := cleanEntryName(hdr.Linkname)
		if err != nil || target == "." {
			return 0, errLayer(name, "bad hard link target %q", hdr.Linkname)
		}
		tparent, tbase := path.Split(target)
		tdir, err := root.OpenFile(cleanParent(tparent), os.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return 0, errLayer(name, "hard link target %q is not in this layer", hdr.Linkname)
		}
		// linkat without AT_SYMLINK_FOLLOW links the entry itself: a link
		// to a symlink is a symlink, never the file it points at.
		err = unix.Linkat(int(tdir.Fd()), tbase, dfd, base, 0)
		tdir.Close()
		if err != nil {
			return 0, errLayer(name, "hard link to %q: %v", hdr.Linkname, err)
		}
		return 0, nil // a link shares its target's attributes
	case tar.TypeFifo:
		if err := unix.Mknodat(dfd, base, unix.S_IFIFO|0o600, 0); err != nil {
			return 0, errLayer(name, "mkfifo: %v", err)
		}
	}
	if err := applyAttrsAt(dfd, name, base, hdr); err != nil {
		return written, err
	}
	if hdr.Typeflag != tar.TypeDir {
		setTimes(dfd, base, hdr.ModTime)
	}
	return written, nil
}

// applyAttrs applies hdr's owner, mode and extended attributes to the
// directory name of root.
func applyAttrs(root *os.Root, name string, hdr *tar.Header, _ bool) error {
	parent, base := path.Split(name)
	if name == "." {
		parent, base = ".", "."
	}
	pdir, err := root.OpenFile(cleanParent(parent), os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return errLayer(name, "%v", err)
	}
	defer pdir.Close()
	return applyAttrsAt(int(pdir.Fd()), name, base, hdr)
}

// maxID is the largest user or group ID kept; (uid_t)-1 means "no change"
// to chown and is refused.
const maxID = 1<<32 - 2

func applyAttrsAt(dfd int, name, base string, hdr *tar.Header) error {
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > maxID || int64(hdr.Gid) > maxID {
		return errLayer(name, "owner %d:%d out of range", hdr.Uid, hdr.Gid)
	}
	if err := unix.Fchownat(dfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %q: %w", name, err)
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return nil // symlinks have no mode of their own, and xattrs on them are not kept
	}
	// After chown, which clears setuid and setgid bits.
	mode := uint32(hdr.Mode) & 0o7777
	if err := unix.Fchmodat(dfd, base, mode, 0); err != nil {
		return fmt.Errorf("chmod %q: %w", name, err)
	}
	for key, value := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(key, "SCHILY.xattr.")
		if !ok || !keptXattr(attr) {
			continue
		}
		// Through the directory descriptor: the path cannot be redirected.
		p := "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + base
		if base == "." {
			p = "/proc/self/fd/" + strconv.Itoa(dfd)
		}
		if err := unix.Lsetxattr(p, attr, []byte(value), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("setting %s on %q: %w", attr, name, err)
		}
	}
	return nil
}

func keptXattr(attr string) bool {
	return strings.HasPrefix(attr, "user.") || attr == "security.capability"
}

func setTimes(dfd int, base string, mtime time.Time) {
	if mtime.IsZero() {
		return
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	unix.UtimesNanoAt(dfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// makeWhiteout records the deletion of target (in a lower layer) as an
// overlayfs whiteout: a character device 0/0 of that name.
func makeWhiteout(root *os.Root, parent, target string) error {
	pdir, err := openParent(root, parent)
	if err != nil {
		return err
	}
	defer pdir.Close()
	name := path.Join(parent, target)
	var st unix.Stat_t
	if unix.Fstatat(int(pdir.Fd()), target, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		if err := root.RemoveAll(name); err != nil {
			return errLayer(name, "replacing with a whiteout: %v", err)
		}
	}
	if err := unix.Mknodat(int(pdir.Fd()), target, unix.S_IFCHR, 0); err != nil {
		return errLayer(name, "whiteout: %v", err)
	}
	return nil
}

// markOpaque records that dir hides the contents of the same directory in
// lower layers.
func markOpaque(root *os.Root, dir string) error {
	d, err := openParent(root, dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Fsetxattr(int(d.Fd()), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		return fmt.Errorf("marking %q opaque: %w", dir, err)
	}
	return nil
}
