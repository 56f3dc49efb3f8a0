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
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// HostImageName is the name of the image built from the host's /usr.
const HostImageName = "host"

// hostEtcAllowlist names the entries of the host's /etc that a sandbox may
// see: what the dynamic linker, TLS, name lookup, time zones, shells and the
// interpreters in /usr need. Only world-readable files among them are
// copied, so key material such as /etc/ssl/private never is. Everything
// else in /etc (shadow, gshadow, ssh host keys, machine-id, credentials of
// package managers...) stays on the host.
var hostEtcAllowlist = []string{
	"alternatives", "ssl", "ca-certificates", "ca-certificates.conf",
	"ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	"localtime", "timezone", "mime.types", "mailcap", "magic", "magic.mime",
	"protocols", "services", "rpc", "ethertypes", "networks", "gai.conf", "host.conf",
	"os-release", "lsb-release", "debian_version", "issue",
	"profile", "profile.d", "bash.bashrc", "inputrc", "shells", "skel",
	"login.defs", "adduser.conf", "default",
	"python3", "python3.11", "python3.12", "matplotlibrc", "fonts",
	"vim", "nanorc", "terminfo", "perl", "bindresvport.blacklist",
}

// systemDirs are the host's top-level system directories. On a merged-/usr
// host they are symlinks into /usr and are recreated as such; otherwise
// they are bind-mounted read-only.
var systemDirs = []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// HostEnv is the environment of the host image.
var HostEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
}

// PrepareHost builds the host image's skeleton and installs it as a
// version of its own in dir (dir/<content hash>), reusing the version
// already there when nothing changed. The skeleton is rebuilt at every
// daemon start so it follows upgrades of the host's packages.
//
// A version, once installed, is never changed or removed here: it is the
// lower layer of every running sandbox booted from it, and those survive a
// daemon restart. Deleting it would empty their roots under them (an
// overlay does not pin its lower directory's contents). CollectHost
// removes versions no overlay uses any more.
func PrepareHost(dir string) (*Image, error) {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	tmp := filepath.Join(dir, ".new")
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", tmp, err)
	}
	if err := buildSkeleton(tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	mounts, err := hostMounts(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	version, err := treeHash(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("hashing the host image: %w", err)
	}
	layer := filepath.Join(dir, version)
	if _, err := os.Lstat(layer); err == nil {
		os.RemoveAll(tmp) // unchanged: running sandboxes and new ones share it
	} else if err := os.Rename(tmp, layer); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("installing host image: %w", err)
	}
	return &Image{
		Name:       HostImageName,
		Layers:     []string{layer},
		Mounts:     mounts,
		Env:        HostEnv,
		WorkingDir: "/workspace",
	}, nil
}

// CollectHost removes the host skeleton versions in dir, and the given
// stale skeletons (older daemons' unversioned ones), that no mounted
// overlay uses as a lower layer; current's layers are always kept. Call it
// after the sandboxes that survived a restart have been reattached and the
// others torn down. It returns what it removed.
func CollectHost(dir string, current *Image, stale ...string) ([]string, error) {
	lowers, err := overlayLowers()
	if err != nil {
		return nil, fmt.Errorf("reading overlay mounts (collecting nothing): %w", err)
	}
	keep := map[string]bool{}
	for _, l := range current.Layers {
		keep[l] = true
	}
	candidates := slices.Clone(stale)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			candidates = append(candidates, filepath.Join(dir, e.Name()))
		}
	}
	var removed []string
	for _, c := range candidates {
		if keep[c] || lowers.uses(c) {
			continue
		}
		if _, err := os.Lstat(c); err != nil {
			continue
		}
		if err := os.RemoveAll(c); err != nil {
			return removed, fmt.Errorf("removing unused host image %s: %w", c, err)
		}
		removed = append(removed, c)
	}
	return removed, nil
}

// treeHash is a digest of a directory tree: names, types, modes, link
// targets and file contents, in lexical order. Two skeletons with the same
// hash are interchangeable.
func treeHash(root string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%q %o ", rel, uint32(info.Mode()))
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%q", target)
		case info.Mode().IsRegular():
			fmt.Fprintf(h, "%d ", info.Size())
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
		}
		h.Write([]byte{'\n'})
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func buildSkeleton(root string) error {
	dirs := []struct {
		path string
		mode os.FileMode
	}{
		{"", 0o755}, {"usr", 0o755}, {"etc", 0o755}, {"workspace", 0o755},
		{"root", 0o700}, {"home", 0o755}, {"tmp", 0o1777}, {"var", 0o755},
		{"var/tmp", 0o1777}, {"var/lib", 0o755}, {"var/cache", 0o755}, {"var/log", 0o755},
		{"run", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755},
		{"mnt", 0o755}, {"opt", 0o755}, {"srv", 0o755}, {"media", 0o755},
		{".sandboxd", 0o755},
	}
	for _, d := range dirs {
		p := filepath.Join(root, d.path)
		if err := os.Mkdir(p, d.mode); err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
		// Mkdir is subject to the umask; set the exact mode.
		if err := os.Chmod(p, d.mode); err != nil {
			return err
		}
	}
	for _, name := range systemDirs {
		target, err := os.Readlink("/" + name)
		if err != nil {
			continue // absent, or a real directory: see hostMounts
		}
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			return err
		}
	}
	if err := copyHostEtc(filepath.Join(root, "etc")); err != nil {
		return err
	}
	return writeEtc(filepath.Join(root, "etc"))
}

func hostMounts(root string) ([]specs.Mount, error) {
	mounts := []specs.Mount{roBind("/usr", "/usr")}
	for _, name := range systemDirs {
		fi, err := os.Lstat("/" + name)
		if err != nil || fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
			continue
		}
		if err := os.Mkdir(filepath.Join(root, name), 0o755); err != nil {
			return nil, err
		}
		mounts = append(mounts, roBind("/"+name, "/"+name))
	}
	return mounts, nil
}

func roBind(src, dst string) specs.Mount {
	return specs.Mount{
		Destination: dst,
		Type:        "bind",
		Source:      src,
		Options:     []string{"rbind", "ro", "nosuid", "nodev"},
	}
}

// writeEtc writes the files that describe the sandbox rather than the host.
// Per-sandbox files (hosts, hostname, resolv.conf) replace these
// placeholders in each sandbox's own writable layer at its first boot.
func writeEtc(etc string) error {
	files := []struct {
		name, content string
		mode          os.FileMode
	}{
		{"passwd", "root:x:0:0:root:/root:/bin/bash\n" +
			"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0o644},
		{"group", "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n", 0o644},
		{"shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640},
		{"gshadow", "root:*::\nusers:*::\nnogroup:*::\n", 0o640},
		{"nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n", 0o644},
		{"hosts", "127.0.0.1\tlocalhost\n", 0o644},
		{"hostname", "sandbox\n", 0o644},
		{"resolv.conf", "", 0o644},
		{"mtab", "", 0o644},
	}
	for _, f := range files {
		p := filepath.Join(etc, f.name)
		os.Remove(p) // a copied host file must not survive underneath
		if err := os.WriteFile(p, []byte(f.content), f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(etc, "mtab"))
	return os.Symlink("/proc/self/mounts", filepath.Join(etc, "mtab"))
}

func copyHostEtc(dst string) error {
	for _, name := range hostEtcAllowlist {
		src := filepath.Join("/etc", name)
		if _, err := os.Lstat(src); err != nil {
			continue
		}
		if err := copyTree(src, filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("copying %s: %w", src, err)
		}
	}
	return nil
}

// copyTree copies src to dst, keeping symlinks as symlinks and skipping
// anything that is not world-readable (and, for directories,
// world-searchable) or is not a regular file, directory or symlink.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return nil
		}
		mode := info.Mode()
		switch {
		case mode&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return nil
			}
			return os.Symlink(link, target)
		case mode.IsDir():
			if mode.Perm()&0o005 != 0o005 {
				return fs.SkipDir
			}
			return os.MkdirAll(target, mode.Perm())
		case mode.IsRegular():
			if mode.Perm()&0o004 == 0 || strings.HasSuffix(path, ".key") {
				return nil
			}
			return copyFile(path, target, mode.Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return nil // raced away or unreadable: skip
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
