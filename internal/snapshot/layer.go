package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Copy is a sandbox's writable layer copied into the store's tmp
// directory, not yet content-addressed. Seal it or Discard it.
type Copy struct {
	s   *Store
	dir string
}

// CopyLayer copies the writable layer upper (an overlay upper directory:
// whiteouts are character devices 0/0, opaque directories carry
// trusted.overlay.opaque) into the store, keeping owners, modes,
// timestamps, extended attributes, hard links and sparse files. The
// caller freezes the sandbox around it, so that the copy is one moment.
// Paths in exclude (relative to the layer's root) are left out of the copy.
func (s *Store) CopyLayer(ctx context.Context, upper string, exclude ...string) (*Copy, error) {
	dir, err := os.MkdirTemp(s.tmpDir(), "copy-")
	if err != nil {
		return nil, err
	}
	c := &Copy{s: s, dir: dir}
	// cp -a keeps what a layer is made of (device nodes as whiteouts,
	// trusted.* xattrs as root) and uses reflinks where the filesystem
	// has them, so that the copy costs no space there.
	out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", "--sparse=auto", upper+"/.", dir+"/").CombinedOutput()
	if err != nil {
		c.Discard()
		return nil, fmt.Errorf("copying the writable layer: %w: %s", err, strings.TrimSpace(string(out)))
	}
	for _, rel := range exclude {
		if err := os.RemoveAll(filepath.Join(dir, filepath.Clean("/"+rel))); err != nil {
			c.Discard()
			return nil, err
		}
	}
	return c, nil
}

// Discard removes an unsealed copy.
func (c *Copy) Discard() { os.RemoveAll(c.dir) }

// Sealed is a layer as it was installed in the store.
type Sealed struct {
	Layer string
	Size  int64
	Files int64
}

// Seal hashes the copy (paths, types, modes, owners, device numbers, link
// targets, extended attributes and contents, in a fixed order) and
// installs it as the layer of that hash; a copy whose layer the store has
// already is dropped, so equal snapshots share one layer.
func (c *Copy) Seal(ctx context.Context) (Sealed, error) {
	sum, size, files, err := hashTree(ctx, c.dir)
	if err != nil {
		c.Discard()
		return Sealed{}, err
	}
	sealed := Sealed{Layer: "sha256-" + sum, Size: size, Files: files}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	dst := c.s.LayerPath(sealed.Layer)
	if _, err := os.Lstat(dst); err == nil {
		c.Discard()
		return sealed, nil
	}
	// The layer's root is what the fork's overlay shows at / unless the
	// image says otherwise; it keeps the upper directory's mode.
	if err := os.Rename(c.dir, dst); err != nil {
		c.Discard()
		return Sealed{}, fmt.Errorf("installing layer %s: %w", sealed.Layer, err)
	}
	return sealed, nil
}

// hashTree returns the hex SHA-256 of the tree at root, the bytes of its
// regular files and the number of its entries.
func hashTree(ctx context.Context, root string) (sum string, size, files int64, err error) {
	h := sha256.New()
	err = walkSorted(root, ".", func(rel string, fi os.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		files++
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st == nil {
			return fmt.Errorf("%s: no stat information", rel)
		}
		full := filepath.Join(root, rel)
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00%d\x00", rel, uint32(st.Mode), st.Uid, st.Gid)
		switch fi.Mode().Type() {
		case fs.ModeSymlink:
			target, err := os.Readlink(full)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "l\x00%s\x00", target)
		case fs.ModeDevice | fs.ModeCharDevice, fs.ModeDevice:
			fmt.Fprintf(h, "d\x00%d\x00", st.Rdev)
		case 0:
			size += fi.Size()
			if err := hashFile(h, full, fi.Size()); err != nil {
				return err
			}
		}
		return hashXattrs(h, full)
	})
	if err != nil {
		return "", 0, 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), size, files, nil
}

// walkSorted calls fn for rel and, for a directory, for everything below
// it in lexical order, never following symbolic links.
func walkSorted(root, rel string, fn func(string, os.FileInfo) error) error {
	fi, err := os.Lstat(filepath.Join(root, rel))
	if err != nil {
		return err
	}
	if err := fn(rel, fi); err != nil {
		return err
	}
	if !fi.IsDir() {
		return nil
	}
	entries, err := os.ReadDir(filepath.Join(root, rel))
	if err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		if err := walkSorted(root, filepath.Join(rel, e.Name()), fn); err != nil {
			return err
		}
	}
	return nil
}

func hashFile(h hash.Hash, path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s changed while it was hashed", path)
	}
	h.Write([]byte(strconv.FormatInt(n, 10)))
	return nil
}

// hashXattrs adds the extended attributes of path (sorted) to h.
func hashXattrs(h hash.Hash, path string) error {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(path, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listing attributes of %s: %w", path, err)
	}
	var names []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		vn, err := unix.Lgetxattr(path, name, buf)
		if err != nil {
			return fmt.Errorf("reading attribute %s of %s: %w", name, path, err)
		}
		fmt.Fprintf(h, "x\x00%s\x00%d\x00", name, vn)
		h.Write(buf[:vn])
	}
	return nil
}

// ShiftOwners stores the copy of a sandbox that runs in a user namespace
// whose root is host UID base as a layer whose owners are 0-based, like an
// image's: every owner (UID, and GID alike) in [base, base+65536) becomes
// its ID inside the sandbox. A fork then mounts the layer idmapped for its
// own range, or as it is without one. Set-ID bits, which chown clears, are
// put back.
func (c *Copy) ShiftOwners(base uint32) error {
	return shiftOwners(c.dir, func(id uint32) int {
		if id >= base && uint64(id) < uint64(base)+idRangeSize {
			return int(id - base)
		}
		return int(id)
	})
}

// Dir is where the copy is; it stays there until Seal or Discard.
func (c *Copy) Dir() string { return c.dir }

// idRangeSize is the size of a sandbox's host ID range.
const idRangeSize = 65536

// OwnTree gives the tree at dir, whose owners are 0-based as in a layer
// (ShiftOwners), to the sandbox whose user namespace's root is host UID
// base: every owner below 65536 becomes base plus it, and any other
// (which a layer from elsewhere may carry) nobody (65534) of the range,
// never a host ID outside it. It is ShiftOwners undone, for a writable
// layer moved in from another node. base 0 (no user namespace) keeps
// owners as they are.
func OwnTree(dir string, base uint32) error {
	if base == 0 {
		return nil
	}
	return shiftOwners(dir, func(id uint32) int {
		if id < idRangeSize {
			return int(base + id)
		}
		return int(base + idRangeSize - 2)
	})
}

// TempDir makes an empty directory in the store's tmp directory (on the
// store's file system, so that it can be renamed into a sandbox's).
func (s *Store) TempDir(prefix string) (string, error) {
	return os.MkdirTemp(s.tmpDir(), prefix)
}

// shiftOwners changes every owner (UID, and GID alike) below dir with
// shift, keeping set-ID bits, which chown clears.
func shiftOwners(dir string, shift func(uint32) int) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		uid, gid := shift(st.Uid), shift(st.Gid)
		if uid == int(st.Uid) && gid == int(st.Gid) {
			return nil
		}
		if err := unix.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("shifting the owner of %s: %w", path, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			return unix.Chmod(path, st.Mode&0o7777)
		}
		return nil
	})
}
