// Package nsmount puts a host mount into the mount namespace of a running
// container, and takes it out again, without restarting the container:
// open_tree(OPEN_TREE_CLONE) copies the host mount as a detached tree,
// a thread of the daemon joins the container's mount namespace (setns, on
// a thread that shares no filesystem state with the others), and
// move_mount attaches the tree there.
//
// Why this is safe against the sandbox: after setns the thread's root is
// the container's root, so no path it resolves can leave the sandbox, and
// the target is opened with openat2(RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV)
// from that root: a symlink planted by the sandbox cannot redirect the
// mount, and a path that crosses a mount (/proc, /sys, /dev, /usr, the
// agent's files, another bucket) is refused rather than shadowed. The
// thread is never returned to the Go scheduler (it exits with its
// goroutine), so no other goroutine ever runs in the sandbox's namespace.
//
// Attach and Detach must never be used on a gVisor sandbox: its mounts
// live in gVisor's kernel, not in a host mount namespace. There the agent
// binary makes the mount from inside (internal/agent/bindmount), creating
// its target with MkdirAll, whose rules are the same.
package nsmount

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/osthread"
)

// ErrPathInvalid means the target cannot hold a mount: a component is a
// symlink or not a directory, or the path crosses another mount.
var ErrPathInvalid = errors.New("mount path invalid")

// Options of Attach.
type Options struct {
	// ReadOnly makes the sandbox's copy read-only (MOUNT_ATTR_RDONLY), on
	// top of whatever the source enforces.
	ReadOnly bool
	// UID and GID own the directories Attach creates: the host IDs of
	// the sandbox's root (its user namespace's range, or 0).
	UID, GID int
}

// Attach mounts a copy of the host mount source at target (absolute,
// cleaned) inside the mount namespace of pid, creating target's missing
// directories (mode 0755).
func Attach(pid int, source, target string, o Options) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", source, err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if o.ReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("mount_setattr: %w", err)
	}
	return inNamespace(pid, func() error {
		dir, err := MkdirAll(target, o.UID, o.GID)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		if err := unix.MoveMount(tree, "", dir, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return fmt.Errorf("move_mount to %s: %w", target, err)
		}
		return nil
	})
}

// Detach unmounts target inside the mount namespace of pid (lazily: a
// process of the sandbox still inside it does not block the call).
// A target that is not a mount point is not an error.
func Detach(pid int, target string) error {
	return inNamespace(pid, func() error {
		parent, err := openDir(path.Dir(target), false)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil
			}
			return err
		}
		defer unix.Close(parent)
		if err := unix.Fchdir(parent); err != nil {
			return err
		}
		err = unix.Unmount(path.Base(target), unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmounting %s: %w", target, err)
		}
		return nil
	})
}

// inNamespace runs fn on a fresh OS thread inside the mount namespace of
// pid. The thread is discarded afterwards.
func inNamespace(pid int, fn func() error) error {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("opening the sandbox's mount namespace: %w", err)
	}
	defer ns.Close()
	// On a thread that is thrown away after: it is left in the sandbox's
	// namespace.
	return osthread.Discard(func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare(CLONE_FS): %w", err)
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("setns into the sandbox's mount namespace: %w", err)
		}
		return fn()
	})
}

// resolve is openat2's resolution for targets: no symlinks anywhere, no
// crossing into another mount.
const resolve = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openDir opens dir (absolute) from the thread's root as O_PATH. With
// sameMount, the path must not cross a mount (the target's parents);
// without, only symlinks are refused (a mount point being detached).
func openDir(dir string, sameMount bool) (int, error) {
	how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolve}
	if !sameMount {
		how.Resolve = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS
	}
	rel := strings.TrimPrefix(path.Clean(dir), "/")
	if rel == "" {
		rel = "."
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, "/"+rel, how)
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// MkdirAll opens target (absolute, from the calling thread's root),
// creating missing directories one by one, each opened relative to its
// parent so that nothing can be swapped in between; no component may be
// a symlink or cross a mount (ErrPathInvalid). It returns an O_PATH
// descriptor of target.
func MkdirAll(target string, uid, gid int) (int, error) {
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	cur := root
	for _, part := range strings.Split(strings.Trim(path.Clean(target), "/"), "/") {
		if part == "" {
			continue
		}
		how := &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: resolve}
		next, err := unix.Openat2(cur, part, how)
		if errors.Is(err, unix.ENOENT) {
			if err := unix.Mkdirat(cur, part, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				unix.Close(cur)
				return -1, fmt.Errorf("%w: creating %s: %v", ErrPathInvalid, target, err)
			}
			// Created by the daemon (host root): give it to the sandbox's
			// root, or a sandbox in a user namespace sees an unmapped owner.
			unix.Fchownat(cur, part, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
			next, err = unix.Openat2(cur, part, how)
		}
		unix.Close(cur)
		if err != nil {
			return -1, fmt.Errorf("%w: %s: %v", ErrPathInvalid, target, err)
		}
		cur = next
	}
	return cur, nil
}
