// Package bindmount puts a bucket mount into a running gVisor sandbox, and
// takes it out again, from inside. A gVisor sandbox's mounts live in
// gVisor's kernel, where the daemon's setns and move_mount cannot reach;
// instead every gVisor sandbox has one host directory bind-mounted at Dir
// (served by runsc's gofer, whose copy of it receives the host's new
// mounts below it: the daemon makes it a shared mount), the daemon mounts
// the bucket's FUSE client at Dir/N on the host, and runs this
// (`sandbox-agent bind-bucket N /PATH [ro]`, through `runsc exec` with
// CAP_SYS_ADMIN, which user code never has) to bind Dir/N at /PATH in
// gVisor's kernel. It never runs as part of the agent.
//
// The target is created and opened with nsmount.MkdirAll, under the same
// rules as on the host kernel: no symlink, no other mount on the way.
package bindmount

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/nsmount"
)

// Arg is the agent's subcommand that runs Main.
const Arg = "bind-bucket"

// Dir is where a gVisor sandbox sees the host directory of its bucket
// mounts; Dir/N is mount N.
const Dir = "/.sandboxd/buckets"

// ExitPathInvalid is the exit status for a target that cannot hold a
// mount (nsmount.ErrPathInvalid), so that the daemon can tell it apart.
const ExitPathInvalid = 3

// Main binds or unbinds as args say and exits:
//
//	bind-bucket N /PATH [ro]
//	bind-bucket --unmount /PATH
func Main(args []string) {
	err := run(args)
	switch {
	case err == nil:
		os.Exit(0)
	case errors.Is(err, nsmount.ErrPathInvalid):
		fmt.Fprintln(os.Stderr, "bind-bucket:", err)
		os.Exit(ExitPathInvalid)
	default:
		fmt.Fprintln(os.Stderr, "bind-bucket:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 2 && args[0] == "--unmount" && validTarget(args[1]) {
		return Unbind(args[1])
	}
	if len(args) < 2 || len(args) > 3 || (len(args) == 3 && args[2] != "ro") || !validTarget(args[1]) {
		return errors.New("usage: sandbox-agent bind-bucket N /PATH [ro] | --unmount /PATH")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 0 || strconv.Itoa(n) != args[0] {
		return fmt.Errorf("bad mount number %q", args[0])
	}
	return Bind(path.Join(Dir, args[0]), args[1], len(args) == 3)
}

func validTarget(p string) bool { return len(p) > 1 && p[0] == '/' && path.Clean(p) == p }

// Bind binds source at target (created if missing), nosuid and nodev,
// and read-only when readOnly; otherwise read-write, although Dir is
// read-only: the sandbox may write to its bucket, never to Dir itself.
func Bind(source, target string, readOnly bool) error {
	fd, err := nsmount.MkdirAll(target, 0, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// The descriptor's magic link names the directory MkdirAll checked,
	// whatever the path resolves to by now.
	at := fmt.Sprintf("/proc/self/fd/%d", fd)
	if err := unix.Mount(source, at, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s at %s: %w", source, target, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID | unix.MS_NODEV)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		return fmt.Errorf("making %s nosuid,nodev: %w", target, err)
	}
	return nil
}

// Unbind detaches the mount at target; a target that is not a mount
// point is not an error.
func Unbind(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	return nil
}
