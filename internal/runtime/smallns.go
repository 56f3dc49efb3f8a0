package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/mountinfo"
	"github.com/sandboxd/sandboxd/internal/osthread"
)

// Why crun creates its containers from a small mount namespace.
//
// `crun create` copies the whole mount table of the namespace it starts
// in (clone(CLONE_NEWNS)), reads it back from /proc/self/mountinfo, makes
// every copy private and, after pivot_root, detaches them all again: work
// in proportion to the number of mounts. The daemon's namespace is the
// host's, and every sandbox adds its mounts to it (its overlay and its
// network namespace, and with a user namespace an idmapped layer and a
// sysfs), so every cold start paid for every sandbox already on the host:
// 250 idle sandboxes added about 6 ms of CPU to a cold start (15 with user
// namespaces), and the equivalent of 1,700 added 15 (34).
//
// So crun's create runs in a namespace of its own made for it: a copy of
// smallNS, which is the host's namespace as it was when the daemon
// started, without any mount below the daemon's state and run
// directories, into which the mounts that the bundle names below them
// (its root, its bind mounts' sources, its namespaces' paths, the bundle
// itself) are cloned from the host's namespace (open_tree(OPEN_TREE_CLONE)
// and move_mount). The host's namespace stays the truth about sandboxes'
// mounts (recovery, image use, teardown and doctor read it, as before);
// the copy lives only as long as the crun process that runs in it, and
// the container's namespace, once cloned from it, does not depend on it.
// Every mount of smallNS is private, so nothing made or unmade in it or in
// a copy of it propagates back to the host. When any of it fails, crun
// runs in the host's namespace, as it did before.

// smallNS is a mount namespace without the mounts below some directories.
type smallNS struct {
	// ns is the namespace's nsfs file, open while creates may enter it.
	ns *os.File
	// below are the directories (absolute, clean) whose mounts it lacks.
	below []string
	made  time.Time
	log   *slog.Logger
}

// smallNSLife is how long a small namespace serves creates before one of
// them has a new one made. Its mounts are private copies, which an
// unmount on the host does not reach and which keep the filesystem busy
// (a disk the operator unmounts on the host stays in use by the copy):
// a new one lets go of it within the minute.
const smallNSLife = time.Minute

// newSmallNS makes a private copy of the calling process's mount
// namespace and detaches in it every mount strictly below one of dirs.
func newSmallNS(dirs []string) (*smallNS, error) {
	n := &smallNS{made: time.Now()}
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, err
		}
		n.below = append(n.below, filepath.Clean(abs))
	}
	err := osthread.Discard(func() error {
		if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		// Private first: an unmount of a shared mount would propagate to
		// its peers in the host's namespace.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("making the copy private: %w", err)
		}
		data, err := os.ReadFile("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		for _, mp := range mountPointsBelow(string(data), n.below) {
			for unix.Unmount(mp, unix.MNT_DETACH) == nil {
			}
		}
		ns, err := os.Open("/proc/thread-self/ns/mnt")
		n.ns = ns
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("making a mount namespace for the runtime: %w", err)
	}
	return n, nil
}

// mountPointsBelow lists the mount points in table (a mountinfo)
// strictly below one of dirs, parents before their children.
func mountPointsBelow(table string, dirs []string) []string {
	var out []string
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := mountinfo.Unescape(f[4])
		if under(mp, dirs) && !slices.Contains(out, mp) {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
	return out
}

// under reports whether path is strictly below one of dirs.
func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// run runs fn (which starts crun and waits for it) on a throw-away thread
// in a fresh copy of n with the host's mounts that paths lie on cloned
// into it. It returns errNoSmallNS, without running fn, when the copy
// cannot be made.
func (n *smallNS) run(paths []string, fn func() error) error {
	trees, err := n.cloneTrees(paths)
	defer func() {
		for _, t := range trees {
			unix.Close(t.fd)
		}
	}()
	if err != nil {
		return fmt.Errorf("%w: %w", errNoSmallNS, err)
	}
	return osthread.Discard(func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("%w: unshare(CLONE_FS): %w", errNoSmallNS, err)
		}
		if err := unix.Setns(int(n.ns.Fd()), unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("%w: setns: %w", errNoSmallNS, err)
		}
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("%w: unshare(CLONE_NEWNS): %w", errNoSmallNS, err)
		}
		for _, t := range trees {
			if err := unix.MoveMount(t.fd, "", unix.AT_FDCWD, t.at, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("%w: attaching %s: %w", errNoSmallNS, t.at, err)
			}
		}
		return fn()
	})
}

// errNoSmallNS marks a failure to make crun's namespace, before crun ran.
var errNoSmallNS = errors.New("no small mount namespace")

// tree is a detached clone of a host mount and where it goes.
type tree struct {
	fd int
	at string
}

// cloneTrees clones from the host's namespace, with everything mounted
// below them, what paths are in it: for a path below n's directories the
// topmost mount there that it lies on (smallNS has none of those), for
// any other path the path itself (a mount made on the host after smallNS
// was may hold it).
func (n *smallNS) cloneTrees(paths []string) ([]tree, error) {
	var roots []string
	for _, p := range paths {
		root := filepath.Clean(p)
		if under(root, []string{"/proc"}) {
			// /proc/<pid>/fd/<n> (the sandbox's user namespace, which
			// the daemon holds) resolves through the process, not the
			// mount table: the copy's /proc is the host's.
			continue
		}
		if under(root, roots) {
			// It comes with that root's recursive clone (below a
			// directory of n's, that root is its topmost mount point
			// too), and is not looked up: the lxcfs views, a FUSE
			// mount, would each cost a round trip to lxcfs.
			continue
		}
		if under(root, n.below) {
			var err error
			if root, err = n.topmostMountPoint(root); err != nil {
				return nil, err
			}
		}
		if root != "" && root != "/" && !slices.Contains(roots, root) {
			roots = append(roots, root)
		}
	}
	// A path below another one comes with its recursive clone.
	slices.Sort(roots)
	var trees []tree
	for _, r := range roots {
		if under(r, roots) {
			continue
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, r, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return trees, fmt.Errorf("cloning %s: %w", r, err)
		}
		trees = append(trees, tree{fd: fd, at: r})
	}
	return trees, nil
}

// topmostMountPoint is the highest mount point on the way from path up to
// the directory of n's it is below, "" if path is on that directory's own
// mount (smallNS has it). It looks from the directory down and stops at
// the first mount point, so that it never looks up a name inside the
// mount it finds (a FUSE mount answers every lookup from its daemon).
func (n *smallNS) topmostMountPoint(path string) (string, error) {
	// The outermost of n's directories it is below: smallNS lacks every
	// mount under any of them.
	dir := ""
	for _, d := range n.below {
		if under(path, []string{d}) && (dir == "" || len(d) < len(dir)) {
			dir = d
		}
	}
	id, err := mountID(dir)
	if err != nil {
		return "", err
	}
	p := dir
	for _, name := range strings.Split(strings.TrimPrefix(path, strings.TrimSuffix(dir, "/")+"/"), "/") {
		p = filepath.Join(p, name)
		pid, err := mountID(p)
		if err != nil {
			return "", err
		}
		if pid != id {
			return p, nil
		}
	}
	return "", nil
}

// mountID is the ID of the mount path lies on (not following a last
// symlink).
func mountID(path string) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return 0, fmt.Errorf("statx %s: %w", path, err)
	}
	return st.Mnt_id, nil
}

// SpecHostPaths are the host paths that crun's create of spec in bundle
// opens: the bundle, the root, the bind mounts' sources and the
// namespaces' paths (for CreateOptions.HostPaths).
func SpecHostPaths(bundle string, spec *specs.Spec) []string {
	paths := []string{bundle}
	if spec.Root != nil {
		root := spec.Root.Path
		if !filepath.IsAbs(root) {
			root = filepath.Join(bundle, root)
		}
		paths = append(paths, root)
	}
	for _, m := range spec.Mounts {
		if m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind") {
			paths = append(paths, m.Source)
		}
	}
	if spec.Linux != nil {
		for _, ns := range spec.Linux.Namespaces {
			if ns.Path != "" {
				paths = append(paths, ns.Path)
			}
		}
	}
	return paths
}

// CreateFromSmallNamespace makes crun's later creates run in a namespace
// without the mounts below dirs (the daemon's state and run directories:
// every sandbox's), but for those their bundle names (see smallNS). Only
// crun: runsc's gofer serves bucket mounts through the host's mount
// propagation, and runc is left as it is.
func (r *Runtime) CreateFromSmallNamespace(log *slog.Logger, dirs ...string) error {
	if r.Name != "crun" {
		return nil
	}
	n, err := newSmallNS(dirs)
	if err != nil {
		return err
	}
	n.log = log
	r.small.Store(n)
	return nil
}

// renewSmallNS replaces old, r's small namespace, with a new one, and
// closes the one old replaced: a create that took that from r.small has
// long entered it. r.smallRenewing is held.
func (r *Runtime) renewSmallNS(old *smallNS) {
	defer r.smallRenewing.Store(false)
	n, err := newSmallNS(old.below)
	if err != nil {
		old.log.Warn("crun's small mount namespace could not be made again: the old one stays", "err", err)
		return
	}
	n.log = old.log
	r.small.Store(n)
	if r.smallRetired != nil {
		r.smallRetired.ns.Close()
	}
	r.smallRetired = old
}

// inSmallNS runs fn, which runs crun's create of bundle, in a fresh copy
// of r's small namespace with the mounts of paths (the bundle's
// SpecHostPaths) cloned in, or in the daemon's namespace if r has none,
// the caller gave no paths, or the copy cannot be made.
func (r *Runtime) inSmallNS(bundle string, paths []string, fn func() error) error {
	n := r.small.Load()
	if n == nil || paths == nil {
		return fn()
	}
	if time.Since(n.made) > smallNSLife && r.smallRenewing.CompareAndSwap(false, true) {
		go r.renewSmallNS(n)
	}
	err := n.run(append(paths, r.rc.Root), fn)
	if !errors.Is(err, errNoSmallNS) {
		return err
	}
	if r.smallFailed.CompareAndSwap(false, true) {
		n.log.Warn("a crun create runs in the daemon's mount namespace: its small one could not be made (said once)", "bundle", bundle, "err", err)
	}
	return fn()
}
