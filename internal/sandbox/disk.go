package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// mountDisk gives a sandbox with a disk quota its own filesystem: a sparse
// file of the quota's size, formatted ext4 on first use and loop-mounted
// where the overlay's upper and work directories live. A full sandbox then
// gets ENOSPC (NO_SPACE) inside; the host's filesystem is unaffected, and
// the file only takes the space actually written.
func mountDisk(ctx context.Context, p paths, size int64) error {
	if mounted, err := rootfs.IsMountPoint(p.disk); err == nil && mounted {
		return nil
	}
	if err := os.MkdirAll(p.disk, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(p.diskImage); os.IsNotExist(err) {
		if err := makeDisk(ctx, p.diskImage, size); err != nil {
			os.Remove(p.diskImage)
			return err
		}
	}
	// util-linux's mount sets up the loop device with autoclear, so it goes
	// away with the unmount.
	out, err := exec.CommandContext(ctx, "mount", "-o", "loop,nosuid,nodev", p.diskImage, p.disk).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mounting the sandbox's disk: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func makeDisk(ctx context.Context, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	f.Close()
	// No reserved blocks (the sandbox is the only user); lazy init keeps
	// formatting fast whatever the size.
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", "-L", "sandbox", path, strconv.FormatInt(size/1024, 10)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("formatting the sandbox's disk (mkfs.ext4, from e2fsprogs): %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// unmountDisk unmounts a sandbox's own filesystem and makes sure its loop
// device is gone. A plain (not lazy) unmount is tried first, because a lazy
// one keeps the loop device attached until the kernel lets the filesystem
// go; losetup -d then detaches a device that stayed.
func (m *Manager) unmountDisk(ctx context.Context, p paths) error {
	if err := m.opts.Mounts.Unmount(p.disk, 2*time.Second); err != nil {
		return err
	}
	if _, err := os.Stat(p.diskImage); err != nil {
		return nil // no quota: no loop device to look for
	}
	out, err := exec.CommandContext(ctx, "losetup", "-j", p.diskImage).Output()
	if err != nil {
		return nil // no losetup, or no image: nothing attached that we can see
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if dev, _, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(dev, "/dev/loop") {
			exec.CommandContext(ctx, "losetup", "-d", dev).Run()
		}
	}
	return nil
}
