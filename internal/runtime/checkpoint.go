package runtime

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	runc "github.com/containerd/go-runc"
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
// memory is read in (a page touched first is read first). That gains
// only when the page load and the kernel load have a CPU each (the caller
// lifts the sandbox's CPU limit for the restore: internal/sandbox,
// resumecpu.go). A page load that fails later kills the sandbox, as a
// restore that fails does (the checkpoint is gone either way: the caller
// drops it on a failed restore).
func (r *Runtime) RestoreInto(ctx context.Context, id, image string, opts CreateOptions) error {
	if r.Name != GVisor {
		return ErrCheckpointUnsupported
	}
	offset, _ := opts.Log.Seek(0, io.SeekEnd)
	args := append(r.globalArgs(), "restore", "--detach", "--background", "--image-path", image, id)
	cmd := exec.CommandContext(ctx, r.Path, args...)
	cmd.Stdout, cmd.Stderr = opts.Log, opts.Log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("runsc restore into a created container: %w: %s", err, tail(opts.Log, offset))
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
