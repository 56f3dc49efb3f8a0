package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// Checkpoints of gVisor sandboxes: runsc saves the whole sandbox (its
// kernel's memory, every process, open files, the network stack) into a
// directory and can start it again from there. crun and runc could only do
// it through CRIU, which does not work on this kernel.

// ErrCheckpointUnsupported: the runtime cannot checkpoint containers.
var ErrCheckpointUnsupported = fmt.Errorf("checkpoints need gVisor (runsc)")

// CheckpointOptions are what Checkpoint takes besides the container and
// the image directory.
type CheckpointOptions struct {
	// LeaveRunning keeps the container running after the checkpoint;
	// otherwise it stops once saved.
	LeaveRunning bool
}

// Checkpoint saves the running container id into the directory image
// (created if needed). Without LeaveRunning the container exits once
// saved. runsc refuses a sandbox that holds a socket bound on the host.
func (r *Runtime) Checkpoint(ctx context.Context, id, image string, o CheckpointOptions) error {
	if r.Name != GVisor {
		return ErrCheckpointUnsupported
	}
	if err := os.MkdirAll(image, 0o700); err != nil {
		return fmt.Errorf("checkpoint directory: %w", err)
	}
	args := append(r.globalArgs(), "checkpoint", "--image-path", image)
	if o.LeaveRunning {
		args = append(args, "--leave-running")
	}
	out, err := exec.CommandContext(ctx, r.Path, append(args, id)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runsc checkpoint: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Restore starts the container id from the bundle and the checkpoint in
// image, detached, and returns its init's host PID. The bundle must
// describe the same container (rootfs, mounts, network namespace) as the
// one saved; runsc takes the network's addresses from the namespace, as a
// create does.
func (r *Runtime) Restore(ctx context.Context, id, bundle, image string, opts CreateOptions) (int, error) {
	if r.Name != GVisor {
		return 0, ErrCheckpointUnsupported
	}
	pidFile := filepath.Join(bundle, "init.pid")
	os.Remove(pidFile)
	offset, _ := opts.Log.Seek(0, io.SeekEnd)
	args := append(r.globalArgs(), "restore", "--detach", "--image-path", image, "--pid-file", pidFile, "--bundle", bundle, id)
	cmd := exec.CommandContext(ctx, r.Path, args...)
	// The container's stdout and stderr, as Create gives them.
	cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("runsc restore: %w: %s", err, tail(opts.Log, offset))
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("reading init pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("parsing init pid %q: %w", data, err)
	}
	return pid, nil
}

// RestoreInto restores the checkpoint in image into the container id,
// which runsc create made ahead (Create without Start): the sandbox's boot
// (its processes, gofer, network set-up) is already done, so what is left
// is loading the checkpoint. The container's init keeps the PID Create
// returned.
//
// Pages load in the background (--background): runsc returns once the
// kernel's state is loaded, and the sandbox runs while the rest of its
// memory is read in (a page touched first is read first). A page load
// that fails later kills the sandbox, as a restore that fails does (the
// checkpoint is gone either way: the caller drops it on a failed
// restore).
//
// And they load with O_DIRECT (--direct) where the image's file system
// allows it. runsc reads the pages file with 128 reads in flight, each on
// a thread of its own; from the page cache each is a copy in the host
// kernel, so on a host with few CPUs those threads take nearly all of the
// CPU from the kernel state's load, which runsc needs before it returns:
// the restore ended with the page load although no page was waited for
// (bench/results/pause.txt). With O_DIRECT the disk (its DMA) does the
// copying and the threads mostly wait. The caller flushes the pages file
// to disk first (FlushCheckpoint), or each read would write it back.
func (r *Runtime) RestoreInto(ctx context.Context, id, image string, opts CreateOptions) error {
	if r.Name != GVisor {
		return ErrCheckpointUnsupported
	}
	offset, _ := opts.Log.Seek(0, io.SeekEnd)
	args := append(r.globalArgs(), "restore", "--detach", "--background")
	if directReads(image) {
		args = append(args, "--direct")
	}
	args = append(args, "--image-path", image, id)
	cmd := exec.CommandContext(ctx, r.Path, args...)
	cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runsc restore into a created container: %w: %s", err, tail(opts.Log, offset))
	}
	return nil
}

// pagesFile is the file of a checkpoint (runsc's default, uncompressed
// format) that holds its memory's pages.
const pagesFile = "pages.img"

// directReads reports whether the pages file of the checkpoint in image
// can be opened with O_DIRECT (not on every file system: tmpfs before
// Linux 6.6, for one, refuses it).
func directReads(image string) bool {
	fd, err := unix.Open(filepath.Join(image, pagesFile), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// FlushCheckpoint writes the pages of the checkpoint in image to disk and
// drops them from the host's page cache: a checkpoint on disk holds no
// memory of the host's while its sandbox is paused, and a restore that
// reads it with O_DIRECT (RestoreInto) need not write it back first. A
// checkpoint without a pages file (compressed) is left as it is.
func FlushCheckpoint(image string) error {
	f, err := os.Open(filepath.Join(image, pagesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the checkpoint's pages: %w", err)
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("writing the checkpoint's pages to disk: %w", err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("dropping the checkpoint's pages from the page cache: %w", err)
	}
	return nil
}

// SignalInit sends sig to the container's init process only.
func (r *Runtime) SignalInit(ctx context.Context, id string, sig syscall.Signal) error {
	if err := r.rc.Kill(ctx, id, int(sig), &runc.KillOpts{}); err != nil {
		return fmt.Errorf("%s kill %s: %w", r.Name, sig, err)
	}
	return nil
}
