package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"

	"golang.org/x/sys/unix"
)

// crun guards against CVE-2019-5736 (a container's process writing to
// the runtime's binary through /proc/<pid>/exe) on every start of the
// binary, `crun state` and `crun delete` included: unless it already runs
// from a fully sealed memfd, it bind-mounts itself read-only somewhere
// in /tmp (a mount, a remount and an unmount in the host's mount
// namespace) or copies itself into a sealed memfd, and executes itself
// again: a second execve and a second dynamic link of crun and its dozen
// libraries. On a 2-vCPU PVM guest that was half of `crun --version`'s
// CPU (18.4 ms against 9.0, load 25) and 9 ms of a `crun run`'s 80.
//
// crun skips all of it when /proc/self/exe is a memfd with exactly the
// seals it sets itself (write, grow, shrink, seal), a file nothing can
// write to: the protection is the one crun would make, made once. So the
// daemon copies crun into such a memfd when it starts, and runs that
// copy, through /proc/<daemon pid>/fd/<n>, for as long as it runs (an
// upgrade of crun takes effect at the daemon's next start). A kernel
// that refuses to execute memfds (vm.memfd_noexec=2) leaves the daemon
// on the binary's own path.

// crunSeals are the seals crun's own copy gets (cloned_binary.c,
// CRUN_MEMFD_SEALS); crun trusts a memfd with exactly these.
const crunSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// sealedCopy returns a memfd holding a copy of the binary at path, sealed
// with crunSeals.
func sealedCopy(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	const name = "sandboxd-runtime"
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		// A kernel before 6.3 knows no MFD_EXEC: its memfds are executable.
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copying %s: %w", path, err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, crunSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("sealing the copy of %s: %w", path, err)
	}
	if seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); err != nil || seals != crunSeals {
		f.Close()
		return nil, fmt.Errorf("the copy of %s has seals %#x, want %#x (%v)", path, seals, crunSeals, err)
	}
	return f, nil
}

// runFromSealedCopy makes every later start of crun (r.exe) run a sealed
// copy of it, if the copy runs: it must answer --version as crun does.
func (r *Runtime) runFromSealedCopy() error {
	f, err := sealedCopy(r.Path)
	if err != nil {
		return err
	}
	exe := "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/" + strconv.Itoa(int(f.Fd()))
	out, err := exec.Command(exe, "--version").Output()
	if err != nil {
		f.Close()
		return fmt.Errorf("running the sealed copy of %s: %w", r.Path, err)
	}
	if !bytes.HasPrefix(out, []byte("crun version")) {
		f.Close()
		return fmt.Errorf("the sealed copy of %s answered --version with %q", r.Path, out)
	}
	r.sealed = f
	r.rc.Command = exe
	return nil
}

// exe is what starts the runtime: its sealed copy (crun), or its path.
func (r *Runtime) exe() string { return r.rc.Command }
