package rootfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/mountinfo"
	"github.com/sandboxd/sandboxd/internal/osthread"
)

// Overlay is a sandbox's root: the image layers read-only below, the
// sandbox's own upper directory above.
type Overlay struct {
	Layers []string // lowest first
	Upper  string
	Work   string
	Target string
	// IDs, when set, is the sandbox's host ID range: each layer is
	// mounted idmapped for it (see mountIDMapped) below the target's
	// parent, and the upper directory's root belongs to the range's root.
	// An idmapped upper layer would make the overlay read-only
	// (EOVERFLOW), and an overlay cannot itself be idmapped (EINVAL), so
	// the upper layer holds the range's IDs on disk.
	IDs *IDRange
	// UserNS, when set, is IDs's user namespace opened ahead; the caller
	// closes it.
	UserNS *PendingUserNS
}

// Mount mounts the overlay on Target unless something is already mounted
// there (after a daemon restart the mount may still be in place).
func (o Overlay) Mount() error {
	for _, d := range []string{o.Upper, o.Work, o.Target} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if mounted, err := IsMountPoint(o.Target); err != nil {
		return err
	} else if mounted {
		return nil
	}
	// The directories are given relative to the target's parent (the
	// sandbox's directory), from a thread whose working directory that
	// is: the kernel shows the option string as given in every
	// mountinfo, the sandbox's own included, and relative paths tell it
	// neither where the state directory is nor the sandbox's key.
	// overlayLowers resolves them again from the mount point.
	base := filepath.Dir(o.Target)
	layers := o.Layers
	if o.IDs != nil {
		var err error
		if layers, err = mountIDMappedLayers(base, o.Layers, *o.IDs, o.UserNS); err != nil {
			return err
		}
	}
	// overlayfs lists lower directories top first.
	lowers := make([]string, len(layers))
	for i, l := range layers {
		if strings.ContainsAny(l, ":,") {
			return fmt.Errorf("layer path %q has a character overlayfs cannot take", l)
		}
		lowers[len(o.Layers)-1-i] = relativeTo(base, l)
	}
	if err := o.provideTmp(); err != nil {
		return err
	}
	if o.IDs != nil {
		if err := ownUpper(o.Upper, *o.IDs); err != nil {
			return err
		}
	}
	upper, work := relativeTo(base, o.Upper), relativeTo(base, o.Work)
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), upper, work)
	return inDir(base, func() error {
		if len(opts) > maxMountOptions {
			return mountManyLayers(lowers, upper, work, o.Target)
		}
		if err := unix.Mount("overlay", o.Target, "overlay", 0, opts); err != nil {
			return fmt.Errorf("mounting overlay on %s: %w", o.Target, err)
		}
		return nil
	})
}

// relativeTo is path relative to base, or path itself when it has none.
func relativeTo(base, path string) string {
	if rel, err := filepath.Rel(base, path); err == nil {
		return rel
	}
	return path
}

// inDir runs fn on a thread of its own whose working directory is dir,
// leaving the process's untouched: the thread stops sharing its
// filesystem attributes (unshare CLONE_FS) before chdir, and is thrown
// away afterwards (a goroutine that ends locked to its thread takes the
// thread with it).
func inDir(dir string, fn func() error) error {
	return osthread.Discard(func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("a thread of its own for mounting: %w", err)
		}
		if err := unix.Chdir(dir); err != nil {
			return fmt.Errorf("mounting from %s: %w", dir, err)
		}
		return fn()
	})
}

// provideTmp gives a root whose image has no /tmp (scratch-based and
// distroless images often have none) a /tmp in its writable layer, mode
// 1777, as other container engines effectively do: many programs fail
// without one. An entry named tmp in any layer, or in the upper directory
// (whatever it is: a symlink, a whiteout, a file), is left alone. It runs
// before the overlay is mounted, when nothing inside the sandbox runs.
func (o Overlay) provideTmp() error {
	for _, dir := range append([]string{o.Upper}, o.Layers...) {
		if _, err := os.Lstat(filepath.Join(dir, "tmp")); !errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	root, err := os.OpenRoot(o.Upper)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Mkdir("tmp", 0o755); err != nil {
		return fmt.Errorf("giving the sandbox a /tmp: %w", err)
	}
	// Mkdir's mode passes through the umask, which also drops the sticky bit.
	if err := root.Chmod("tmp", 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("giving the sandbox a /tmp: %w", err)
	}
	return nil
}

// Unmount detaches the overlay and its idmapped layers, if any; a target
// that is not mounted is fine.
func (o Overlay) Unmount() error {
	if err := Unmount(o.Target); err != nil {
		return err
	}
	return UnmountIDMapped(filepath.Dir(o.Target))
}

// Unmount detaches whatever is mounted on target, if anything. Lazy
// (MNT_DETACH) so that a process still holding a file open inside cannot
// make destroy fail; the kernel frees the mount when the last user goes.
func Unmount(target string) error {
	for {
		err := unix.Unmount(target, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // not (or no longer) a mount point
		}
		if err != nil {
			return fmt.Errorf("unmounting %s: %w", target, err)
		}
		// Loop: mounts may be stacked.
	}
}

// IsMountPoint reports whether path is the root of a mount.
//
// statx says so directly (STATX_ATTR_MOUNT_ROOT, Linux 5.8+). Older
// kernels get a device comparison and, for a bind mount of the same
// filesystem, a scan of /proc/self/mountinfo, which grows with every
// sandbox and is read on every sandbox start.
func IsMountPoint(path string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	var st, parent unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return false, err
	}
	if err := unix.Lstat(path+"/..", &parent); err != nil {
		return false, err
	}
	if st.Dev != parent.Dev {
		return true, nil
	}
	// Same device: may still be a bind mount of the same filesystem; check
	// mountinfo to be sure.
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && mountinfo.Unescape(f[4]) == path {
			return true, nil
		}
	}
	return false, nil
}

// UnmountWait unmounts target, waiting up to limit for it to stop being
// busy, and detaches it lazily if it stays busy. Nothing mounted is fine.
func UnmountWait(target string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		err := unix.Unmount(target, 0)
		switch {
		case err == nil:
			continue // stacked mounts: unmount the next one
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EBUSY) && time.Now().Before(deadline):
			time.Sleep(10 * time.Millisecond)
		default:
			return Unmount(target)
		}
	}
}
