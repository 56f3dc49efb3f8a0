package sandbox

import (
	"context"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/store"
)

// The manager's edge: what it needs from the host and the registry, as
// small interfaces. The daemon passes the real ones (internal/store,
// internal/runtime, internal/cgroup, HostMounts); the unit tests pass
// fakes that need no root, so that the rules above them (lifecycle,
// warm pool, eviction, idle sleep, recovery) are tested in seconds, and
// the real machinery once, end to end.

// Registry is the persistent record of sandboxes (*store.Store).
type Registry interface {
	Insert(ctx context.Context, sb store.Sandbox) error
	// InsertAhead makes sb's row durable without inserting it yet
	// (store.Store.InsertAhead): the returned row's Apply does.
	InsertAhead(ctx context.Context, sb store.Sandbox) (store.Pending, error)
	Get(ctx context.Context, id string) (store.Sandbox, error)
	List(ctx context.Context) ([]store.Sandbox, error)
	SetStatus(ctx context.Context, id, status, reason string, at time.Time) error
	SetConfig(ctx context.Context, id string, config []byte) error
	TouchLastUsed(ctx context.Context, times map[string]time.Time) error
	Delete(ctx context.Context, id string) error
}

// HostMemory is what the host's kernel says of its memory (ProcMemory).
type HostMemory interface {
	// Available is the memory available for new work without swapping
	// (MemAvailable), in bytes.
	Available() (int64, error)
	// Pressure is PSI's "some avg10" of memory: the share of the last
	// 10 s, in percent, in which some task waited for memory. ok is false
	// when the kernel does not report it.
	Pressure() (pct float64, ok bool)
}

// Runtime runs containers from OCI bundles (*runtime.Runtime: crun, runc
// or runsc).
type Runtime interface {
	// Create creates the container without starting it and returns its
	// init's host PID.
	Create(ctx context.Context, id, bundle string, opts runtime.CreateOptions) (int, error)
	Start(ctx context.Context, id string) error
	// State reports the container, or runtime.ErrNotExist.
	State(ctx context.Context, id string) (runtime.State, error)
	Kill(ctx context.Context, id string, sig syscall.Signal) error
	// Delete removes the container; an absent one is fine.
	Delete(ctx context.Context, id string) error
	// Pause freezes every process of the container; Resume thaws them.
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// Checkpoint saves the container's memory and processes into a
	// directory, Restore starts it again from there, and SignalInit
	// signals its init alone (gVisor only: checkpoint.go).
	Checkpoint(ctx context.Context, id, image string, o runtime.CheckpointOptions) error
	Restore(ctx context.Context, id, bundle, image string, opts runtime.CreateOptions) (int, error)
	// RestoreInto restores into a container created ahead (resume.go).
	RestoreInto(ctx context.Context, id, image string, opts runtime.CreateOptions) error
	SignalInit(ctx context.Context, id string, sig syscall.Signal) error
	// ExecAdmin runs a command in the container with privileges user code
	// never has (gVisor only).
	ExecAdmin(ctx context.Context, id string, args ...string) error
	// StartAdmin starts such a command and leaves it running, to be
	// talked to over its stdin and stdout, once it says it is ready
	// (gVisor only).
	StartAdmin(ctx context.Context, id string, args ...string) (*runtime.AdminProcess, error)
	// Annotations are the spec annotations the runtime needs.
	Annotations() map[string]string
}

// Cgroups hands out sandboxes' cgroups by path.
type Cgroups interface {
	Group(path string) Cgroup
}

// Cgroup is one sandbox's cgroup (*cgroup.Group).
type Cgroup interface {
	// PrepareUser creates the user sub-cgroup and returns the mounts that
	// show it inside the container.
	PrepareUser() ([]specs.Mount, error)
	// Split moves everything but init into the user sub-cgroup, limited.
	Split(initPID int, limits cgroup.UserLimits) error
	// SplitNeedsInit reports whether Split needs the created container's
	// init (cgroup v2); if not, it runs before the runtime does.
	SplitNeedsInit() bool
	RemoveChildren() error
	Remove() error
}

// HostCgroups adapts the host's cgroup hierarchies to Cgroups.
func HostCgroups(h *cgroup.Host) Cgroups { return hostCgroups{h} }

type hostCgroups struct{ h *cgroup.Host }

func (c hostCgroups) Group(path string) Cgroup { return c.h.Group(path) }

// Mounts is the root-only work on the host's mount table and namespaces
// that is not the runtime's.
type Mounts interface {
	// MountOverlay mounts ov at ov.Target, creating its directories.
	MountOverlay(ov rootfs.Overlay) error
	// Unmount unmounts everything at dir, waiting up to limit while it is
	// busy, then detaching it; a dir with nothing mounted is fine.
	Unmount(dir string, limit time.Duration) error
	// UTS opens the UTS namespace of pid, whose hostname it then sets
	// without looking pid up again.
	UTS(pid int) (UTSNamespace, error)
}

// UTSNamespace is an open UTS namespace (Mounts.UTS).
type UTSNamespace interface {
	SetHostname(name string) error
	Close() error
}

// HostMounts is Mounts on this host.
type HostMounts struct{}

// MountOverlay implements Mounts.
func (HostMounts) MountOverlay(ov rootfs.Overlay) error { return ov.Mount() }

// Unmount implements Mounts.
func (HostMounts) Unmount(dir string, limit time.Duration) error {
	return rootfs.UnmountWait(dir, limit)
}

// UTS implements Mounts.
func (HostMounts) UTS(pid int) (UTSNamespace, error) { return openUTS(pid) }
