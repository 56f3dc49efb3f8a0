package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sandboxd/sandboxd/internal/bounded"
)

// A sandbox's /etc/hosts, /etc/hostname and /etc/resolv.conf are written
// into its own root, through the mounted overlay, so they land in its
// writable layer: on its disk, under its quota. (They used to be
// read-write bind mounts of files in the state directory, which a sandbox
// could grow without bound on the filesystem that holds every other
// sandbox, the registry and the images.) They are written at the first
// boot only; after that they are the sandbox's to edit, like any file.

// etcFiles are the files written, in order.
var etcFiles = []string{"hosts", "hostname", "resolv.conf"}

// maxLegacyEtcBytes bounds what is carried over from a file of the old
// bind-mounted kind: more than this was never a real hosts file.
const maxLegacyEtcBytes = 64 << 10

// etcContents are the files of a sandbox called name.
func etcContents(name, mode string, dns []netip.Addr) map[string]string {
	var resolv strings.Builder
	if mode == NetworkInternet {
		for _, a := range dns {
			fmt.Fprintf(&resolv, "nameserver %s\n", a)
		}
	}
	return map[string]string{
		"hosts":       hostsFile(name),
		"hostname":    name + "\n",
		"resolv.conf": resolv.String(),
	}
}

func hostsFile(name string) string {
	return "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + name + "\n"
}

// initEtc writes the sandbox's own files into its mounted root, unless a
// boot before did (the marker in its state directory says so). A sandbox
// made by an older daemon has them in legacyDir; their contents (bounded)
// move into its root. owner is the host UID (and GID) that the files get,
// the sandbox's root's, or -1 for the host's root.
func initEtc(p paths, name, mode string, dns []netip.Addr, owner int) error {
	if _, err := os.Stat(p.etcWritten); err == nil {
		return nil
	}
	files := etcContents(name, mode, dns)
	for _, f := range etcFiles {
		// What fits the bound is carried over.
		if data, err := bounded.ReadFile(filepath.Join(p.etc, f), maxLegacyEtcBytes); err == nil || errors.Is(err, bounded.ErrTooLarge) {
			files[f] = string(data)
		}
	}
	if err := writeRootFiles(p.rootfs, files, owner); err != nil {
		return err
	}
	if err := os.WriteFile(p.etcWritten, nil, 0o600); err != nil {
		return err
	}
	return os.RemoveAll(p.etc)
}

// writeRootFiles writes files into /etc of the root at rootDir. The root
// belongs to the sandbox, so every path is resolved inside it (os.Root):
// a symlink such as /etc/hosts → /etc/shadow stays in the sandbox, and one
// that climbs out is refused. Whatever was there (a file, a symlink) is
// replaced by a regular file, owned by owner (see initEtc).
func writeRootFiles(rootDir string, files map[string]string, owner int) error {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.MkdirAll("etc", 0o755); err != nil {
		return fmt.Errorf("creating /etc in the sandbox: %w", err)
	}
	for _, name := range etcFiles {
		content, ok := files[name]
		if !ok {
			continue
		}
		path := "etc/" + name
		if err := root.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replacing /%s in the sandbox: %w", path, err)
		}
		f, err := root.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("writing /%s in the sandbox: %w", path, err)
		}
		_, err = f.WriteString(content)
		if err == nil && owner >= 0 {
			err = f.Chown(owner, owner)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing /%s in the sandbox: %w", path, err)
		}
	}
	return nil
}

// rewriteRootFiles is writeRootFiles for files that the daemon wrote
// itself and no caller's code touched since: a warm sandbox's, renamed
// when it is handed out. It writes each in place when it is still a
// regular file of one link, which on an overlay needs no whiteout:
// replacing a file that the image's layer has too makes overlayfs create
// one and rename over it, under the upper filesystem's rename lock, which
// every rename on that filesystem shares (/etc/hosts's replacement alone
// took 1.9 ms p50 of a take at load 28, most of the take). Anything else
// is replaced the safe way (writeRootFiles).
func rewriteRootFiles(rootDir string, files map[string]string, owner int) error {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	rest := map[string]string{}
	for _, name := range etcFiles {
		content, ok := files[name]
		if !ok {
			continue
		}
		if err := rewriteInPlace(root, "etc/"+name, content); err != nil {
			rest[name] = content
		}
	}
	if len(rest) == 0 {
		return nil
	}
	return writeRootFiles(rootDir, rest, owner)
}

// rewriteInPlace overwrites the regular file path of root with content.
// It refuses (and writes nothing) when path is a symlink or anything but a
// regular file of one link.
func rewriteInPlace(root *os.Root, path, content string) error {
	f, err := openInPlace(root, path)
	if err != nil {
		return err
	}
	defer f.Close()
	return overwrite(f, content)
}

// openInPlace opens the regular file path of root for writing in place,
// refusing a symlink or anything but a regular file of one link.
func openInPlace(root *os.Root, path string) (*os.File, error) {
	f, err := root.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.Mode().IsRegular() || !ok || st.Nlink != 1 {
		f.Close()
		return nil, fmt.Errorf("/%s is not a regular file of its own", path)
	}
	return f, nil
}

// overwrite makes content the whole of the file f, open for writing.
func overwrite(f *os.File, content string) error {
	// Truncating to zero first would make ext4 write the file back at
	// close (its replace-by-truncate heuristic): write, then cut the tail.
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		return err
	}
	return f.Truncate(int64(len(content)))
}
