package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/osthread"
)

// IDRangeSize is how many host UIDs (and GIDs) a sandbox's user namespace
// maps: 0-65535 inside, as a distribution's tools expect.
const IDRangeSize = 65536

// IDRange is a sandbox's host UID and GID range: root inside is Base on
// the host, UID n inside is Base+n, for IDRangeSize IDs.
type IDRange struct {
	Base uint32
}

// Valid reports whether r is a range that leaves the host's own IDs
// (0-65535) alone and fits in 32 bits.
func (r IDRange) Valid() bool {
	return r.Base >= IDRangeSize && uint64(r.Base)+IDRangeSize <= 1<<32-1
}

// idmappedDir is where a sandbox's idmapped lower layers are attached,
// below the overlay target's parent (the sandbox's directory).
const idmappedDir = "lower"

// OpenUserNS returns a descriptor of a new user namespace that maps r and
// is owned by r's root (host UID r.Base): what mount_setattr
// (MOUNT_ATTR_IDMAP) takes, and what a sandbox's runtime joins.
//
// Why the owner matters: the kernel charges per-user counts (inotify
// instances and watches, POSIX message queue bytes, queued signals,
// SHM_LOCK bytes, namespaces) to the user in each namespace and to the
// namespace's owner in its parent, up to the host, and holds each level
// to its limit. A namespace the host's root made (as a runtime's clone
// does) charges every sandbox to the host's root, so one sandbox that used
// up root's 128 inotify instances or 800 KiB of message queues left none
// for the others, nor for the host's root. Owned by r's root, a sandbox's
// counts add up on that host user alone, held to the host's per-user
// limits as any other user's are.
//
// A process's new user namespace is owned by its effective UID, and a Go
// program cannot unshare one itself (it is multithreaded), nor have its
// child do so after changing its UID (Go unshares first); so a process
// of raw system calls cloned for it (usernsclone.go; elsewhere than amd64,
// unshare(1) run as r's root, which execs cat(1) to wait on a pipe) takes
// r's root's credentials and unshares it. Once it says so the namespace
// exists: the daemon writes its ID maps (it may: it has CAP_SETUID above
// it), opens it and ends the process, which never runs anything of the
// sandbox's. setgroups(2) stays allowed in it, as in a namespace a
// runtime makes.
func (r IDRange) OpenUserNS() (*os.File, error) {
	if !r.Valid() {
		return nil, fmt.Errorf("host ID range %d is invalid", r.Base)
	}
	if f, ok, err := r.openUserNSByClone(); ok {
		return f, err
	}
	return r.openUserNSByUnshare()
}

// openUserNSByUnshare is OpenUserNS by unshare(1) and cat(1), where there
// is no maker process (usernsclone.go).
func (r IDRange) openUserNSByUnshare() (*os.File, error) {
	cmd, err := userNSCommand(r)
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting a process for a new user namespace: %w", err)
	}
	defer func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var echo [1]byte
	if _, err := stdin.Write(echo[:]); err != nil {
		return nil, fmt.Errorf("making a user namespace: %w", err)
	}
	if _, err := io.ReadFull(stdout, echo[:]); err != nil {
		cmd.Wait() // stderr is complete
		return nil, fmt.Errorf("making a user namespace as host UID %d: %w (%s)", r.Base, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return openMadeUserNS(cmd.Process.Pid, r)
}

// userNSCommand is unshare(1) making a user namespace as r's root (its
// user, its group, no supplementary groups) and waiting in cat(1). It
// keeps CAP_SYS_ADMIN until it unshares, as the host's root would have
// it: a host that lets only privileged users make user namespaces (Debian's
// kernel.unprivileged_userns_clone=0, Ubuntu's AppArmor restriction) lets
// it too. Nothing on the host runs as r's root to reach it meanwhile (the
// sandbox's processes are in their own user and PID namespaces), and once
// it has unshared its capabilities are the new namespace's alone.
func userNSCommand(r IDRange) (*exec.Cmd, error) {
	var paths [2]string
	for i, name := range []string{"unshare", "cat"} {
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("a user namespace for a sandbox needs %s(1): %w", name, err)
		}
		paths[i] = p
	}
	cmd := exec.Command(paths[0], "--user", "--", paths[1])
	cmd.Dir = "/"
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: r.Base, Gid: r.Base, Groups: []uint32{}},
		AmbientCaps: []uintptr{unix.CAP_SYS_ADMIN},
		// No Pdeathsig: the kernel sends it when the forking thread
		// exits, and a Go thread exits when a goroutine that locked it
		// (a setns into a sandbox's network namespace) ends: 4 starts of
		// 300 failed so. cat ends by itself when the daemon does: its
		// stdin is the daemon's pipe.
	}
	return cmd, nil
}

// PendingUserNS is a user namespace being opened in the background
// (OpenUserNS starts and ends a process, the slowest step of mounting an
// idmapped root), so that a sandbox's start can do other things meanwhile.
type PendingUserNS struct {
	done chan struct{}
	f    *os.File
	err  error
}

// OpenUserNSAsync starts opening r's user namespace. The caller must Close
// the result.
func (r IDRange) OpenUserNSAsync() *PendingUserNS {
	p := &PendingUserNS{done: make(chan struct{})}
	go func() {
		p.f, p.err = r.OpenUserNS()
		close(p.done)
	}()
	return p
}

// Wait returns the namespace once it is open; it stays p's to close.
func (p *PendingUserNS) Wait() (*os.File, error) {
	<-p.done
	return p.f, p.err
}

// Close waits for the namespace and closes it.
func (p *PendingUserNS) Close() {
	if f, err := p.Wait(); err == nil {
		f.Close()
	}
}

// mountIDMapped attaches a read-only, idmapped copy of the mount at src on
// target: files owned by host UID n appear owned by r.Base+n, so the
// sandbox's root owns what the host's root owns in its image, while the
// image on disk stays unchanged and shared. Read-only so that nothing,
// not even a recursive delete of the sandbox's directory that reached it,
// can change the image through it.
func mountIDMapped(src, target string, userns *os.File) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("cloning %s for an idmapped mount: %w", src, err)
	}
	defer unix.Close(fd)
	attr := unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY,
		Userns_fd: uint64(userns.Fd()),
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("idmapping %s: %w", src, err)
	}
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attaching idmapped %s on %s: %w", src, target, err)
	}
	return nil
}

// mountIDMappedLayers attaches each layer, idmapped for r, at
// <base>/lower/<i> (unless already there: a daemon restart leaves them)
// and returns those paths in the same order.
func mountIDMappedLayers(base string, layers []string, r IDRange, pending *PendingUserNS) (_ []string, err error) {
	var userns *os.File
	defer func() {
		if userns != nil && pending == nil {
			userns.Close()
		}
	}()
	out := make([]string, len(layers))
	for i, l := range layers {
		target := filepath.Join(base, idmappedDir, strconv.Itoa(i))
		out[i] = target
		if err := os.MkdirAll(target, 0o700); err != nil {
			return nil, err
		}
		if mounted, err := IsMountPoint(target); err != nil {
			return nil, err
		} else if mounted {
			continue
		}
		if userns == nil && pending != nil {
			if userns, err = pending.Wait(); err != nil {
				return nil, err
			}
		}
		if userns == nil {
			if userns, err = r.OpenUserNS(); err != nil {
				return nil, err
			}
		}
		if err := mountIDMapped(l, target, userns); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// UnmountIDMapped detaches every idmapped layer of the sandbox whose
// directory is dir and removes their mount points; a sandbox without them
// is fine.
func UnmountIDMapped(dir string) error {
	root := filepath.Join(dir, idmappedDir)
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(root, e.Name())
		if err := Unmount(p); err != nil {
			errs = append(errs, err)
			continue
		}
		// Remove, never RemoveAll: if the unmount did not take, this
		// fails on a non-empty directory instead of walking the image.
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		os.Remove(root)
	}
	return errors.Join(errs...)
}

// ownUpper gives the upper directory's root (the sandbox's /), and a /tmp
// the daemon made there, to the range's root, so that root inside owns
// them; overlayfs takes the root directory's owner from the upper layer.
// Only entries still owned by the host's root change: a sandbox's own
// chown of / is kept.
func ownUpper(upper string, r IDRange) error {
	for _, p := range []string{upper, filepath.Join(upper, "tmp")} {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return err
		}
		if st.Uid != 0 || st.Gid != 0 {
			continue
		}
		if err := unix.Lchown(p, int(r.Base), int(r.Base)); err != nil {
			return fmt.Errorf("giving %s to the sandbox's root: %w", p, err)
		}
		// chown may clear set-ID bits; put the mode back as it was.
		if err := unix.Chmod(p, st.Mode&0o7777); err != nil {
			return err
		}
	}
	return nil
}

// ProbeIDMap checks, in a scratch directory below dir (on the state
// directory's filesystem, where layers live), that this kernel gives a
// user namespace mapping r and an overlay on an idmapped lower layer whose
// files belong to r's root. Everything it mounts is gone when it returns.
func ProbeIDMap(dir string, r IDRange) error {
	scratch := filepath.Join(dir, "idmap")
	os.RemoveAll(scratch) // a leftover of a crash: nothing is mounted there any more
	layer := filepath.Join(scratch, "layer")
	if err := os.MkdirAll(layer, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	if err := os.WriteFile(filepath.Join(layer, "f"), nil, 0o644); err != nil {
		return err
	}
	ov := Overlay{Layers: []string{layer}, Upper: filepath.Join(scratch, "upper"), Work: filepath.Join(scratch, "work"),
		Target: filepath.Join(scratch, "root"), IDs: &r}
	if err := ov.Mount(); err != nil {
		return err
	}
	defer ov.Unmount()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(ov.Target, "f"), &st); err != nil {
		return err
	}
	if st.Uid != r.Base {
		return fmt.Errorf("a layer's root-owned file shows as owned by %d through the overlay, not by %d", st.Uid, r.Base)
	}
	return nil
}

// MountSysfs mounts, read-only on target, a sysfs whose network part is
// the network namespace at netnsPath's. A runtime cannot mount sysfs for
// a container in a user namespace that does not own the container's
// network namespace (the daemon made that one, so the host owns it), and
// crun then binds the host's /sys instead, which lists every host and
// sandbox interface. The daemon mounts it for the container, from a
// thread that enters the network namespace (sysfs takes its network view
// from the mounting thread) and that is thrown away afterwards. Nothing
// is done when target is already a mount point.
func MountSysfs(netnsPath, target string) error {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	if mounted, err := IsMountPoint(target); err != nil {
		return err
	} else if mounted {
		return nil
	}
	ns, err := os.Open(netnsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	// On a thread that is thrown away after: it dies in the sandbox's netns.
	return osthread.Discard(func() error {
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering the sandbox's network namespace: %w", err)
		}
		flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
		if err := unix.Mount("sysfs", target, "sysfs", flags, ""); err != nil {
			return fmt.Errorf("mounting a sysfs for the sandbox: %w", err)
		}
		return nil
	})
}

// MountIDMapped attaches a read-only copy of the mount at src on target,
// idmapped by the user namespace userns maps (host UID n shows as
// Base+n): a backup's image below a sandbox in a user namespace. userns
// stays the caller's to close.
func MountIDMapped(src, target string, userns *PendingUserNS) error {
	ns, err := userns.Wait()
	if err != nil {
		return err
	}
	return mountIDMapped(src, target, ns)
}
