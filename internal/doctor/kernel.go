package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// checkCgroup names the host's cgroup layout and fails when the controllers
// sandboxes are limited with are not available.
func checkCgroup() Check {
	c := Check{Name: "cgroup", Required: true}
	layout := cgroupLayout()
	if _, err := cgroup.Detect(); err != nil {
		c.Status, c.Detail = Missing, fmt.Sprintf("%s: %v", layout, err)
		c.Fix = "mount the memory and pids controllers (systemd does; check cgroup_disable= on the kernel command line)"
		return c
	}
	if layout == "v2" {
		data, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		if err != nil {
			c.Status, c.Detail = Missing, fmt.Sprintf("cgroup v2: %v", err)
			return c
		}
		have := strings.Fields(string(data))
		var missing []string
		for _, want := range []string{"cpu", "memory", "pids"} {
			if !slices.Contains(have, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) > 0 {
			c.Status = Missing
			c.Detail = "cgroup v2 without the " + strings.Join(missing, ", ") + " controller(s)"
			c.Fix = "enable them (cgroup_enable= on the kernel command line, or systemd's default delegation)"
			return c
		}
		c.Status, c.Detail = OK, "cgroup v2 (unified), controllers: "+strings.Join(have, " ")
		return c
	}
	c.Status, c.Detail = OK, "cgroup "+layout
	return c
}

// cgroupLayout tells v2, hybrid (v1 controllers beside a v2 hierarchy) and
// v1 apart by the filesystem types mounted at the usual places.
func cgroupLayout() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2"
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)"
	}
	return "v1"
}

// checkOverlay looks for overlayfs among the kernel's filesystems, or as a
// module the kernel loads on the first overlay mount.
func checkOverlay() Check {
	c := Check{Name: "overlayfs", Required: true}
	if hasFilesystem("overlay") {
		c.Status, c.Detail = OK, "overlay filesystem available"
		return c
	}
	if moduleAvailable("overlay") {
		c.Status, c.Detail = OK, "overlay module present (the kernel loads it on the first mount)"
		return c
	}
	c.Status, c.Detail = Missing, "the kernel has no overlay filesystem"
	c.Fix = "use a kernel built with CONFIG_OVERLAY_FS (every Debian and Ubuntu kernel is), or modprobe overlay"
	return c
}

// checkUserns makes a user namespace the way the daemon makes each
// sandbox's (see userNS), which is what user-namespaced sandboxes and
// idmapped mounts need. A namespace made by root, as a runtime's clone
// makes one, would say nothing of a host that keeps other users from
// making them.
func checkUserns(ns *os.File, nsErr error, base uint32) Check {
	c := Check{Name: "userns", Required: false}
	if v, err := readInt("/proc/sys/user/max_user_namespaces"); err == nil && v == 0 {
		c.Status, c.Detail = Missing, "user.max_user_namespaces is 0"
		c.Fix = "sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/ to keep it)"
		return c
	}
	if nsErr != nil {
		c.Status, c.Detail = Missing, fmt.Sprintf("cannot make a sandbox's user namespace as its root, host UID %d: %v", base, nsErr)
		c.Fix = "needs unshare(1) (util-linux) and a kernel with CONFIG_USER_NS; a host that keeps users other than " +
			"root from making user namespaces (an LSM policy, a sysctl) must let the sandboxes' UIDs (--userns-base) make them; " +
			"until then sandboxes run without user namespaces"
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("user namespaces can be made as a sandbox's root (host UID %d)", base)
	return c
}

// userNS makes a user namespace as the daemon makes a sandbox's: owned by
// the first range's root, by unshare(1) run as that host UID
// (rootfs.IDRange.OpenUserNS). base 0 is the daemon's default.
func userNS(base uint32) (*os.File, uint32, error) {
	if base == 0 {
		base = sandbox.DefaultUserNSBase
	}
	ns, err := rootfs.IDRange{Base: base}.OpenUserNS()
	return ns, base, err
}

// checkIdmap clones a mount of the state directory's filesystem and asks
// the kernel to idmap it to the user namespace ns, without attaching the
// clone anywhere: the filesystem and the kernel both have to support it.
func checkIdmap(ns *os.File, nsErr error, stateDir string) Check {
	c := Check{Name: "idmapped-mounts", Required: false}
	dir := existingParent(stateDir)
	if nsErr != nil {
		c.Status, c.Detail = Missing, fmt.Sprintf("needs user namespaces: %v", nsErr)
		c.Fix = "see the userns check"
		return c
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		c.Status, c.Detail = Missing, fmt.Sprintf("open_tree %s: %v", dir, err)
		c.Fix = "Linux 5.12 or later"
		return c
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		c.Status = Missing
		c.Detail = fmt.Sprintf("the filesystem of %s (%s) cannot be idmapped: %v", dir, fsName(dir), err)
		c.Fix = "put the state directory on ext4, xfs or btrfs, on Linux 5.12 or later (tmpfs needs 6.3)"
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("%s (%s) can be idmapped", dir, fsName(dir))
	return c
}

// checkIPForward reads net.ipv4.ip_forward, which internet-mode sandboxes
// need and the daemon turns on at start.
func checkIPForward() Check {
	c := Check{Name: "ip-forward", Required: false}
	v, err := readInt("/proc/sys/net/ipv4/ip_forward")
	switch {
	case err != nil:
		c.Status, c.Detail = Missing, err.Error()
	case v == 1:
		c.Status, c.Detail = OK, "net.ipv4.ip_forward = 1"
	default:
		// Not a problem: the daemon turns it on when it sets up its network.
		c.Status, c.Detail = OK, "net.ipv4.ip_forward = 0 now; sandboxd turns it on at start"
	}
	return c
}

// checkFUSE looks for /dev/fuse and the fuse filesystem, which FUSE mounts
// inside sandboxes need.
func checkFUSE() Check {
	c := Check{Name: "fuse", Required: false}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		c.Status, c.Detail = Missing, "/dev/fuse does not exist"
		c.Fix = "modprobe fuse (and add fuse to /etc/modules-load.d/ to keep it)"
		return c
	}
	if !hasFilesystem("fuse") && !moduleAvailable("fuse") {
		c.Status, c.Detail = Missing, "the kernel has no fuse filesystem"
		c.Fix = "modprobe fuse"
		return c
	}
	c.Status, c.Detail = OK, "/dev/fuse present"
	return c
}

func hasFilesystem(name string) bool {
	f, err := os.Open("/proc/filesystems")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && fields[len(fields)-1] == name {
			return true
		}
	}
	return false
}

// moduleAvailable says whether a module is loaded or sits in the running
// kernel's module directory, without loading it.
func moduleAvailable(name string) bool {
	if _, err := os.Stat("/sys/module/" + name); err == nil {
		return true
	}
	var uts unix.Utsname
	if unix.Uname(&uts) != nil {
		return false
	}
	release := unix.ByteSliceToString(uts.Release[:])
	data, err := os.ReadFile(filepath.Join("/lib/modules", release, "modules.dep"))
	if err != nil {
		return false
	}
	return strings.Contains(string(data), "/"+name+".ko")
}

func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
}

// existingParent is dir, or its nearest ancestor that exists.
func existingParent(dir string) string {
	if dir == "" {
		return "/"
	}
	for {
		if _, err := os.Stat(dir); err == nil || errors.Is(err, os.ErrPermission) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}

// fsName names the filesystem type of dir for messages.
func fsName(dir string) string {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return "unknown filesystem"
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem 0x%x", st.Type)
}
