package rootfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ShareAgent copies the agent binary src onto a read-only tmpfs of its own
// at dir and returns the copy's path, which sandboxes bind-mount.
//
// Why a copy: a bind mount shows, in the mount table of everyone who can
// see it (the sandbox included), the path of its source within the source's
// filesystem, so binding src itself tells a sandbox where sandboxd is
// installed. The copy's path within its tmpfs is only its name.
//
// The tmpfs outlives the daemon, as running sandboxes' bind mounts do
// anyway: a restarted daemon reuses it when it holds the same binary, and
// otherwise detaches it (sandboxes already started keep theirs) and mounts
// a fresh one.
func ShareAgent(dir, src string) (string, error) { return ShareBinary(dir, src, "sandbox-agent") }

// ShareBinary is ShareAgent for another binary that sandboxes bind-mount
// (the spawn wrapper), on a tmpfs of its own at dir, named name-<hash>.
func ShareBinary(dir, src, name string) (string, error) {
	sum, size, err := hashFile(src)
	if err != nil {
		return "", fmt.Errorf("reading the %s binary: %w", name, err)
	}
	dst := filepath.Join(dir, name+"-"+sum[:16])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	mounted, err := IsMountPoint(dir)
	if err != nil {
		return "", err
	}
	if mounted {
		if _, err := os.Stat(dst); err == nil {
			return dst, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if err := Unmount(dir); err != nil {
			return "", err
		}
	}
	if err := mountBinaryTmpfs(dir, size); err != nil {
		return "", err
	}
	if err := copyAgent(src, dst, size); err != nil {
		Unmount(dir)
		return "", err
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		Unmount(dir)
		return "", fmt.Errorf("making the agent's tmpfs read-only: %w", err)
	}
	return dst, nil
}

// hugePage is the size of a transparent huge page (x86-64, arm64 with 4K pages).
const hugePage = 2 << 20

// mountBinaryTmpfs mounts the tmpfs that holds one binary of size bytes,
// in transparent huge pages where the kernel has them (huge=always).
//
// Why: every sandbox's start maps the agent's 12 MB binary afresh, and on a
// virtual machine whose page tables are shadowed by the host (this project's
// PVM guests), each 4 KiB page a new process touches costs a fault or a
// shadow fault of 10-20 us of CPU. A page cache of 2 MiB pages lets the
// kernel map the binary's text and read-only data 2 MiB at a time (the
// agent is linked with its segments 2 MiB-aligned, see the Makefile): about
// 80 faults fewer per agent start. A kernel without them refuses the option;
// the binary is then served in 4 KiB pages as before.
func mountBinaryTmpfs(dir string, size int64) error {
	// Room for the binary rounded up to whole huge pages, and one more;
	// two inodes (root, binary).
	room := (size+hugePage-1)/hugePage*hugePage + hugePage
	opts := fmt.Sprintf("size=%d,nr_inodes=4,mode=0755", room)
	err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts+",huge=always")
	if err != nil {
		err = unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
	}
	if err != nil {
		return fmt.Errorf("mounting a tmpfs for the agent on %s: %w", dir, err)
	}
	return nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// copyAgent copies src to dst and checks that all size bytes arrived
// (copyFile skips a source it cannot open).
func copyAgent(src, dst string, size int64) error {
	if err := copyFile(src, dst, 0o755); err != nil {
		return fmt.Errorf("copying the agent to %s: %w", dst, err)
	}
	fi, err := os.Stat(dst)
	if err != nil {
		return fmt.Errorf("copying the agent to %s: %w", dst, err)
	}
	if fi.Size() != size {
		return fmt.Errorf("copying the agent to %s: %d of %d bytes", dst, fi.Size(), size)
	}
	return nil
}
