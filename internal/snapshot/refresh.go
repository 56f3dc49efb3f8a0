package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Refresh brings a copy made by CopyLayer while the sandbox ran up to
// date with upper, with the sandbox frozen: entries whose inode changed
// (ctime) at or after since, or that the copy lacks, are copied again;
// entries upper no longer has are removed from the copy. A ctime cannot
// be set by user code (utimes moves it to now), so nothing that changed
// after since is missed. Paths in exclude stay out, as in CopyLayer. It
// returns how many entries it copied or removed.
func (c *Copy) Refresh(ctx context.Context, upper string, since time.Time, exclude ...string) (int, error) {
	skip := map[string]bool{}
	for _, rel := range exclude {
		skip[filepath.Clean(rel)] = true
	}
	n := 0
	err := filepath.WalkDir(upper, func(src string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, src)
		if skip[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := os.Lstat(src)
		if err != nil {
			return err
		}
		dst := filepath.Join(c.dir, rel)
		di, derr := os.Lstat(dst)
		st := fi.Sys().(*syscall.Stat_t)
		changed := !time.Unix(st.Ctim.Sec, st.Ctim.Nsec).Before(since)
		switch {
		case derr == nil && fi.IsDir() && di.IsDir():
			if changed {
				n++
				return copyMeta(src, dst, fi)
			}
			return nil
		case derr == nil && !changed && fi.Mode().Type() == di.Mode().Type():
			return nil
		}
		n++
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		return copyEntry(src, dst, fi)
	})
	if err != nil {
		return n, fmt.Errorf("refreshing the copy: %w", err)
	}
	// What the sandbox removed meanwhile goes from the copy.
	err = filepath.WalkDir(c.dir, func(dst string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(c.dir, dst)
		if _, err := os.Lstat(filepath.Join(upper, rel)); errors.Is(err, fs.ErrNotExist) {
			n++
			if err := os.RemoveAll(dst); err != nil {
				return err
			}
			if d.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("refreshing the copy: %w", err)
	}
	return n, nil
}

// copyEntry copies one entry of a layer (a directory without its
// contents, which the walk copies next) with its metadata.
func copyEntry(src, dst string, fi os.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	switch fi.Mode().Type() {
	case fs.ModeDir:
		if err := os.Mkdir(dst, 0o700); err != nil {
			return err
		}
	case fs.ModeSymlink:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	case 0:
		if err := copyFile(src, dst); err != nil {
			return err
		}
	default:
		// Device nodes (overlayfs whiteouts are 0/0), FIFOs, sockets.
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return fmt.Errorf("%s: %w", dst, err)
		}
	}
	return copyMeta(src, dst, fi)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// copyMeta gives dst src's owner, mode, extended attributes and times.
func copyMeta(src, dst string, fi os.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSymlink {
		// After chown, which clears setuid and setgid bits.
		if err := unix.Chmod(dst, st.Mode&07777); err != nil {
			return err
		}
	}
	if err := copyXattrs(src, dst); err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// copyXattrs makes dst's extended attributes src's (trusted.overlay.opaque
// included: it is what makes a recreated directory hide the image's).
func copyXattrs(src, dst string) error {
	want, err := xattrs(src)
	if err != nil {
		return err
	}
	have, err := xattrs(dst)
	if err != nil {
		return err
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			if err := unix.Lremovexattr(dst, name); err != nil {
				return err
			}
		}
	}
	for name, v := range want {
		if err := unix.Lsetxattr(dst, name, v, 0); err != nil {
			return fmt.Errorf("setting %s on %s: %w", name, dst, err)
		}
	}
	return nil
}

func xattrs(path string) (map[string][]byte, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		vn, err := unix.Lgetxattr(path, name, buf)
		if err != nil {
			return nil, err
		}
		out[name] = append([]byte(nil), buf[:vn]...)
	}
	return out, nil
}
