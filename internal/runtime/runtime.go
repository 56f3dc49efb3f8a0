// Package runtime drives an OCI runtime (crun, runc or gVisor's runsc) through its CLI and
// builds the OCI spec of a sandbox container. It knows nothing of sandbox
// IDs, registries or HTTP: it creates, starts, inspects and deletes
// containers in bundles that its caller prepared.
package runtime

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// ErrNotExist is returned for a container the runtime does not know.
var ErrNotExist = errors.New("container does not exist")

// Runtime is one OCI runtime binary with its own state directory.
type Runtime struct {
	// Name is "crun", "runc" or "gvisor" (runsc).
	Name string
	// Path is the binary's absolute path.
	Path string
	rc   *runc.Runc

	// seccompBPF is the default seccomp profile as compiled by crun for
	// the first container, reused by later ones (see Annotations).
	seccompBPF atomic.Pointer[string]

	// sealed is crun's sealed copy that runs instead of Path (sealed.go);
	// sealErr says why there is none.
	sealed  *os.File
	sealErr error

	// small is the mount namespace crun's creates start from (smallns.go),
	// nil to start them in the daemon's.
	small atomic.Pointer[smallNS]
	// smallFailed is set once a create could not use small.
	smallFailed atomic.Bool
	// smallRenewing is held while a new small namespace is made; the
	// one it replaced last, smallRetired, is closed by the next renewal.
	smallRenewing atomic.Bool
	smallRetired  *smallNS
}

// New returns a Runtime for the binary at path keeping its container state
// in root (a tmpfs such as /run, so it is gone after a reboot just like the
// containers it describes). crun runs from a sealed copy of the binary,
// made here (see sealed.go), or from path if the copy cannot run.
func New(name, path, root string) *Runtime {
	r := &Runtime{Name: name, Path: path, rc: &runc.Runc{Command: path, Root: root}}
	if name == "crun" {
		r.sealErr = r.runFromSealedCopy()
	}
	return r
}

// GVisor is the Runtime name of runsc.
const GVisor = "gvisor"

// NewGVisor returns a Runtime for runsc at path on the given platform
// (systrap, ptrace or kvm). The global flags are what sandboxd's design
// needs of gVisor:
//
//   - --overlay2=none: writes go to the rootfs the daemon mounted (the
//     sandbox's overlay, maybe on its quota filesystem), not to an
//     in-memory overlay that a restart would lose;
//   - --host-uds=create: the agent's socket, bound inside the sandbox in
//     the bind-mounted socket directory, is a real host socket the daemon
//     can connect to (otherwise it would exist only in gVisor's kernel).
//
// The network stays gVisor's own netstack (--network=sandbox): the sandbox
// never talks to the host kernel's network stack.
func NewGVisor(path, root, platform string) *Runtime {
	return &Runtime{Name: GVisor, Path: path, rc: &runc.Runc{Command: path, Root: root, ExtraArgs: []string{
		"--platform=" + platform, "--overlay2=none", "--host-uds=create",
	}}}
}

// Close releases what the runtime keeps on the host between containers:
// runsc pins an empty network namespace for its gofers at <root>/null-netns
// (bind mounts, possibly stacked by concurrent creates), which would keep
// the state directory from being removed. Running containers hold their
// own references; runsc pins a new one when it needs it.
func (r *Runtime) Close() {
	if r.Name != GVisor {
		return
	}
	path := filepath.Join(r.rc.Root, "null-netns")
	for unix.Unmount(path, unix.MNT_DETACH) == nil {
	}
}

// ExecAdmin runs args in the running container id with CAP_SYS_ADMIN added
// to the process's capabilities, and waits for it (runsc only: it is how
// the daemon changes what lives in gVisor's kernel, such as the hostname).
func (r *Runtime) ExecAdmin(ctx context.Context, id string, args ...string) error {
	if r.Name != GVisor {
		return fmt.Errorf("%s: ExecAdmin is for gVisor only", r.Name)
	}
	cmdArgs := append(r.globalArgs(), "exec", "--cap", "CAP_SYS_ADMIN", id)
	out, err := exec.CommandContext(ctx, r.Path, append(cmdArgs, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("runsc exec: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Platform is the gVisor platform the runtime runs on; empty for others.
func (r *Runtime) Platform() string {
	for _, a := range r.rc.ExtraArgs {
		if p, ok := strings.CutPrefix(a, "--platform="); ok {
			return p
		}
	}
	return ""
}

// globalArgs are the arguments every command of this runtime starts with.
func (r *Runtime) globalArgs() []string {
	return append([]string{"--root", r.rc.Root}, r.rc.ExtraArgs...)
}

// CreateOptions are what Create passes to a container besides its bundle.
type CreateOptions struct {
	// Log receives the container's stdout and stderr (the agent's log), as
	// well as the runtime's own error messages, which Create quotes when it
	// fails.
	Log *os.File
	// ExtraFiles are handed to the container's init as descriptors 3, 4...
	ExtraFiles []*os.File
	// Start starts the container as well (`run --detach`): one runtime
	// process instead of two (a runsc start is a Go program's start and a
	// call to its sandbox), for a caller with nothing to do in between.
	Start bool
	// HostPaths are the bundle's SpecHostPaths: the mounts crun's create
	// needs in its small mount namespace (smallns.go). Without them crun
	// creates in the daemon's namespace.
	HostPaths []string
}

// Create creates the container id from the bundle without starting it
// (unless opts.Start) and returns its init process's host PID.
func (r *Runtime) Create(ctx context.Context, id, bundle string, opts CreateOptions) (int, error) {
	pidFile := filepath.Join(bundle, "init.pid")
	os.Remove(pidFile)
	offset, _ := opts.Log.Seek(0, io.SeekEnd)
	copts := &runc.CreateOpts{IO: fileIO{opts.Log}, PidFile: pidFile, ExtraFiles: opts.ExtraFiles}
	err := r.inSmallNS(bundle, opts.HostPaths, func() error {
		if opts.Start {
			copts.Detach = true
			_, err := r.rc.Run(ctx, id, bundle, copts)
			return err
		}
		return r.rc.Create(ctx, id, bundle, copts)
	})
	if err != nil {
		return 0, fmt.Errorf("%s create: %w: %s", r.Name, err, tail(opts.Log, offset))
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("reading init pid: %w", err)
	}
	r.keepSeccompBPF(id)
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("parsing init pid %q: %w", data, err)
	}
	return pid, nil
}

// Annotations returns runtime-specific annotations to add to every
// container's spec.
//
// Compiling the default seccomp profile (about 350 rules, for three
// architectures) with libseccomp is the largest single cost of `crun
// create`: about 16 ms of a 37 ms `crun run` on a 2-vCPU VM. crun keeps the
// compiled filter in its state directory and accepts a precompiled one in
// the run.oci.seccomp_bpf_data annotation, so the filter crun compiled for
// the first container is handed to the next ones. The profile is the same
// for every sandbox (it depends only on the fixed capability set), so the
// filter is too. The spec keeps its seccomp section as well, so a runtime
// that ignores the annotation still applies the profile.
func (r *Runtime) Annotations() map[string]string {
	if bpf := r.seccompBPF.Load(); bpf != nil {
		return map[string]string{"run.oci.seccomp_bpf_data": *bpf}
	}
	return nil
}

func (r *Runtime) keepSeccompBPF(id string) {
	if r.Name != "crun" || r.seccompBPF.Load() != nil {
		return
	}
	data, err := os.ReadFile(filepath.Join(r.rc.Root, id, "seccomp.bpf"))
	// A filter is a whole number of 8-byte BPF instructions.
	if err != nil || len(data) == 0 || len(data)%8 != 0 {
		return
	}
	enc := base64.StdEncoding.EncodeToString(data)
	r.seccompBPF.CompareAndSwap(nil, &enc)
}

// Start starts a created container.
func (r *Runtime) Start(ctx context.Context, id string) error {
	if err := r.rc.Start(ctx, id); err != nil {
		return fmt.Errorf("%s start: %w", r.Name, err)
	}
	return nil
}

// State is what the runtime reports about a container.
type State struct {
	Status string // created, running, stopped, paused
	PID    int
}

// State returns the container's state, or ErrNotExist.
func (r *Runtime) State(ctx context.Context, id string) (State, error) {
	if !r.mayHold(id) {
		return State{}, ErrNotExist
	}
	c, err := r.rc.State(ctx, id)
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "does not exist") || strings.Contains(msg, "not exist") || strings.Contains(msg, "No such file") {
			return State{}, ErrNotExist
		}
		return State{}, fmt.Errorf("%s state: %w", r.Name, err)
	}
	return State{Status: c.Status, PID: c.Pid}, nil
}

// mayHold reports whether the runtime may hold state for container id.
// crun and runc keep each container's state in a directory <root>/<id>
// (made by create, removed by delete), so without it the answer needs no
// process: every start asks first whether a crashed daemon left its
// container behind (Delete), and running crun to hear "does not exist"
// took a few ms of each cold start, tens on a loaded host. runsc keeps
// files named "<id>_sandbox:<sandbox id>.state" (and .lock) and a socket
// "runsc-<id>.sock" in the root instead: starting runsc to hear "does not
// exist" took half a second of a gVisor cold start on a loaded 2-CPU host.
func (r *Runtime) mayHold(id string) bool {
	if r.rc.Root == "" || id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return true
	}
	if r.Name == GVisor {
		return r.runscMayHold(id)
	}
	_, err := os.Lstat(filepath.Join(r.rc.Root, id))
	return !errors.Is(err, fs.ErrNotExist)
}

func (r *Runtime) runscMayHold(id string) bool {
	entries, err := os.ReadDir(r.rc.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, id+"_sandbox:") || n == "runsc-"+id+".sock" {
			return true
		}
	}
	return false
}

// Delete kills every process of the container and deletes it. A container
// that does not exist is not an error.
//
// One `delete --force` does it all: crun kills init through a pidfd, after
// checking its start time (a PID reused by a host process is never
// signalled), the PID namespace's other processes die with it, and crun
// then removes the container's cgroups, killing what is left and retrying
// while they are busy; runsc destroys its sandbox. Asking for the state,
// killing and waiting first cost two more runtime processes per destroy,
// tens of ms of CPU on a loaded host. They stay for a delete that fails.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	if !r.mayHold(id) {
		return nil
	}
	if err := r.rc.Delete(ctx, id, &runc.DeleteOpts{Force: true}); err != nil {
		return r.deleteStepByStep(ctx, id)
	}
	return nil
}

// deleteStepByStep kills the container's processes, waits for its init to
// go so that its cgroup is empty when the runtime removes it, and deletes it.
func (r *Runtime) deleteStepByStep(ctx context.Context, id string) error {
	st, err := r.State(ctx, id)
	if errors.Is(err, ErrNotExist) {
		return nil
	}
	if err == nil && st.PID > 0 && st.Status != "stopped" {
		// Killing init kills the whole PID namespace.
		_ = r.rc.Kill(ctx, id, int(syscall.SIGKILL), &runc.KillOpts{All: true})
		waitGone(ctx, st.PID, 5*time.Second)
	}
	if err := r.rc.Delete(ctx, id, &runc.DeleteOpts{Force: true}); err != nil {
		if _, serr := r.State(ctx, id); errors.Is(serr, ErrNotExist) {
			return nil
		}
		return fmt.Errorf("%s delete: %w", r.Name, err)
	}
	return nil
}

// Kill sends sig to every process of the container.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	return r.rc.Kill(ctx, id, int(sig), &runc.KillOpts{All: true})
}

func waitGone(ctx context.Context, pid int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		if isZombie(pid) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func isZombie(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && i+2 < len(data) && data[i+2] == 'Z'
}

// fileIO hands a file to the runtime as the container's stdout and stderr.
// A file, not a pipe: the container outlives the runtime CLI process and
// the daemon, and must never block on or die from a closed pipe.
type fileIO struct{ f *os.File }

func (f fileIO) Close() error            { return nil }
func (f fileIO) Stdin() io.WriteCloser   { return nil }
func (f fileIO) Stdout() io.ReadCloser   { return nil }
func (f fileIO) Stderr() io.ReadCloser   { return nil }
func (f fileIO) Set(cmd *exec.Cmd)       { cmd.Stdout, cmd.Stderr = f.f, f.f }
func (f fileIO) CloseAfterStart() error  { return nil }
func tail(f *os.File, from int64) string { return readTail(f, from, 2048) }
func readTail(f *os.File, from int64, max int64) string {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil || end <= from {
		return ""
	}
	if end-from > max {
		from = end - max
	}
	buf := make([]byte, end-from)
	n, _ := f.ReadAt(buf, from)
	return strings.TrimSpace(string(buf[:n]))
}

// Pause freezes every process of the container (the cgroup freezer; runsc
// stops its sentry's tasks), for a moment in which its files do not move.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	if err := r.rc.Pause(ctx, id); err != nil {
		return fmt.Errorf("%s pause: %w", r.Name, err)
	}
	return nil
}

// Resume thaws a container Pause froze.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	if err := r.rc.Resume(ctx, id); err != nil {
		return fmt.Errorf("%s resume: %w", r.Name, err)
	}
	return nil
}
