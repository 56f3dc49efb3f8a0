package api

import "time"

// NetworkMode says what a sandbox's network namespace can reach.
type NetworkMode string

const (
	// NetworkNone gives the sandbox only its own loopback.
	NetworkNone NetworkMode = "none"
	// NetworkInternet gives the sandbox a routed veth with NAT to the outside.
	// Private ranges and the host's networks stay unreachable unless listed
	// in AllowCIDRs, the host itself unless listed in AllowHostCIDRs; other
	// sandboxes are never reachable.
	NetworkInternet NetworkMode = "internet"
)

// SandboxOptions are the settings a sandbox is created with. Every field is
// optional; zero values mean the daemon's defaults (see docs/api.md).
type SandboxOptions struct {
	// Image is the root filesystem image. Default "host": the host's /usr,
	// read-only, with a synthesised /etc.
	Image string `json:"image,omitempty"`
	// Env is added to the environment of every session and process.
	Env map[string]string `json:"env,omitempty"`
	// Labels are free-form key/value pairs for the caller's bookkeeping.
	// At most 32 labels; keys up to 63 bytes, values up to 256 bytes.
	Labels map[string]string `json:"labels,omitempty"`
	// NodeSelector, on a cluster, places the sandbox only on a node with
	// every one of these labels (its --node-label flags); no such node is
	// NO_MATCHING_NODE. At most 16. A single host ignores it.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// Limits caps the sandbox's resources; zero fields take the defaults.
	Limits *Limits `json:"limits,omitempty"`
	// Network configures the sandbox's network namespace.
	Network *NetworkOptions `json:"network,omitempty"`
	// InstanceType is a preset of limits: "lite", "standard" or "heavy"
	// (see docs/api.md). Fields of Limits override it.
	InstanceType string `json:"instanceType,omitempty"`
	// SleepAfter is how long, in milliseconds, the sandbox may be idle
	// before it is put to sleep. Default: the daemon's --sleep-after (10
	// minutes); at least 1000, at most the daemon's --max-sleep-after.
	SleepAfter int64 `json:"sleepAfter,omitempty"`
	// KeepAlive disables sleeping. Default false.
	KeepAlive *bool `json:"keepAlive,omitempty"`
	// Runtime runs the sandbox: "crun" or "runc" (a container on the
	// host's kernel; only the one the daemon detected is available) or
	// "gvisor" (runsc: the sandbox's system calls are served by gVisor's
	// user-space kernel). Default: the daemon's --default-runtime. A
	// runtime the host cannot run answers RUNTIME_UNAVAILABLE.
	Runtime string `json:"runtime,omitempty"`
	// FromSnapshot creates the sandbox from a snapshot (docs/snapshots.md):
	// its files, image and runtime are the snapshot's (Image and Runtime
	// may repeat them, not change them); everything else is the new
	// sandbox's own. An unknown name answers SNAPSHOT_NOT_FOUND.
	FromSnapshot string `json:"fromSnapshot,omitempty"`
	// Volumes are named volumes (POST /v1/volumes) mounted into the
	// sandbox whenever it starts; at most 8, at paths that follow the
	// rules of bucket mounts. An unknown name answers VOLUME_NOT_FOUND.
	Volumes []VolumeMount `json:"volumes,omitempty"`
}

// SandboxUpdate is the body of PATCH /v1/sandboxes/{id}: the settings that
// may change after creation. Absent fields stay as they are.
type SandboxUpdate struct {
	// SleepAfter in milliseconds.
	SleepAfter *int64 `json:"sleepAfter,omitempty"`
	KeepAlive  *bool  `json:"keepAlive,omitempty"`
}

// Limits are cgroup limits on a whole sandbox (agent and user code).
type Limits struct {
	// MemoryBytes is the memory limit in bytes (no swap). Minimum 64 MiB.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// MilliCPU is the CPU quota in thousandths of a core (1000 = one core).
	MilliCPU int64 `json:"milliCpu,omitempty"`
	// Pids is the maximum number of tasks (processes and threads). Minimum 32.
	Pids int64 `json:"pids,omitempty"`
	// DiskBytes caps the sandbox's writable disk (its own filesystem; a
	// full disk is ENOSPC inside). 0: no quota. Minimum 64 MiB.
	DiskBytes int64 `json:"diskBytes,omitempty"`
}

// NetworkOptions configures a sandbox's network.
type NetworkOptions struct {
	// Mode is "none" or "internet". Default: the daemon's --default-network.
	Mode NetworkMode `json:"mode,omitempty"`
	// AllowCIDRs are addresses beyond the host, otherwise blocked (private
	// ranges, the host's networks), that this sandbox may reach, e.g.
	// "10.1.2.3/32". They never open the host itself or another sandbox: an
	// entry inside the daemon's sandbox subnet is refused, and one that
	// contains it ("0.0.0.0/0") applies to the rest. At most 64.
	AllowCIDRs []string `json:"allowCidrs,omitempty"`
	// AllowHostCIDRs are addresses of the host itself (any of its
	// interfaces, e.g. the sandbox's gateway) this sandbox may connect to,
	// on any port. At most 64. A tenant's sandbox may name only addresses
	// inside the daemon's --host-access-allow (HOST_ACCESS_FORBIDDEN).
	AllowHostCIDRs []string `json:"allowHostCidrs,omitempty"`
	// AllowDomains, DenyDomains, DenyCIDRs and Default are the egress
	// policy by name (see NetworkPolicy and docs/network.md).
	AllowDomains []string `json:"allowDomains,omitempty"`
	DenyDomains  []string `json:"denyDomains,omitempty"`
	DenyCIDRs    []string `json:"denyCidrs,omitempty"`
	Default      string   `json:"default,omitempty"`
}

// SandboxStatus is where a sandbox is in its lifecycle.
type SandboxStatus string

const (
	StatusCreating SandboxStatus = "creating"
	StatusRunning  SandboxStatus = "running"
	// StatusSleeping: put to sleep when idle (or to make room). Disk, env,
	// sessions' definitions and exposed ports are kept; any call wakes it.
	StatusSleeping SandboxStatus = "sleeping"
	// StatusPaused (gVisor only): memory and processes checkpointed to
	// disk, on request or instead of sleeping; any call restores it,
	// processes, sessions and code contexts included.
	StatusPaused SandboxStatus = "paused"
	// StatusStopped: stopped on request; any call starts it again.
	StatusStopped SandboxStatus = "stopped"
	// StatusFailed: could not start, or its agent died; StatusReason says
	// why, and the next call tries again.
	StatusFailed     SandboxStatus = "failed"
	StatusDestroying SandboxStatus = "destroying"
	// StatusLost: its files (disk) vanished behind the daemon's back, so
	// it cannot start again; calls answer SANDBOX_LOST, and it can only be
	// destroyed.
	StatusLost SandboxStatus = "lost"
)

// Sandbox describes one sandbox, as returned by ensure, get and list.
type Sandbox struct {
	ID string `json:"id"`
	// Tenant owns the sandbox: the name of its key, or "default" for the
	// admin namespace. IDs are per tenant.
	Tenant string        `json:"tenant,omitempty"`
	Status SandboxStatus `json:"status"`
	// StatusReason says why the sandbox is in its status (e.g. the failure).
	StatusReason string `json:"statusReason,omitempty"`
	Image        string `json:"image"`
	// ImageDigest is the config digest of the image the sandbox was
	// created from; the sandbox keeps it even if the name moves on. Empty
	// for the host image.
	ImageDigest string `json:"imageDigest,omitempty"`
	// Runtime runs the sandbox: "crun", "runc" or "gvisor".
	Runtime string `json:"runtime"`
	// FromSnapshot is the snapshot the sandbox was created from, if any.
	FromSnapshot string `json:"fromSnapshot,omitempty"`
	// Volumes are the named volumes the sandbox mounts.
	Volumes    []VolumeMount     `json:"volumes,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Limits     Limits            `json:"limits"`
	Network    NetworkInfo       `json:"network"`
	CreatedAt  time.Time         `json:"createdAt"`
	LastUsedAt time.Time         `json:"lastUsedAt"`
	// StatusChangedAt is when Status last changed.
	StatusChangedAt time.Time `json:"statusChangedAt"`
	InstanceType    string    `json:"instanceType,omitempty"`
	// SleepAfter in milliseconds; KeepAlive disables it.
	SleepAfter int64 `json:"sleepAfter"`
	KeepAlive  bool  `json:"keepAlive"`
	// IdleDeadline is when a running sandbox will be put to sleep if
	// nothing uses it; absent when not running or kept alive.
	IdleDeadline *time.Time `json:"idleDeadline,omitempty"`
	// Created is true in the answer to the call that created the sandbox.
	Created bool `json:"created,omitempty"`
	// Isolation says what separates the sandbox from the host.
	Isolation Isolation `json:"isolation"`
	// Node is the cluster node the sandbox is placed on, as a cluster's
	// gateway answers (docs/cluster.md); absent from a single host.
	Node string `json:"node,omitempty"`
}

// Isolation is what separates a sandbox from the host (docs/security.md).
type Isolation struct {
	// Runtime runs the sandbox: "crun", "runc" or "gvisor".
	Runtime string `json:"runtime"`
	// UserNamespace says whether the sandbox runs in a user namespace of
	// its own, its root an unprivileged host UID. False for sandboxes made
	// before user namespaces or with them off, and for gVisor sandboxes
	// (whose root is gVisor's kernel's; runsc runs it in a user namespace
	// of its own).
	UserNamespace bool `json:"userNamespace"`
	// HostUIDBase is the host UID of the sandbox's root; UID n inside is
	// HostUIDBase+n, for 65536 IDs (GIDs alike). Absent without a user
	// namespace.
	HostUIDBase uint32 `json:"hostUidBase,omitempty"`
}

// Lifecycle event types, as sent by GET /v1/events.
const (
	LifecycleCreated   = "created"
	LifecycleStarted   = "started"
	LifecycleSlept     = "slept"
	LifecycleWoke      = "woke"
	LifecyclePaused    = "paused"
	LifecycleResumed   = "resumed"
	LifecycleStopped   = "stopped"
	LifecycleDestroyed = "destroyed"
	LifecycleFailed    = "failed"
)

// LifecycleEvent is one event of GET /v1/events; the SSE event name is
// Type.
type LifecycleEvent struct {
	Type      string `json:"type"`
	SandboxID string `json:"sandboxId"`
	// Tenant owns the sandbox ("default": the admin namespace). A
	// tenant's stream carries only its own sandboxes' events.
	Tenant    string        `json:"tenant,omitempty"`
	Status    SandboxStatus `json:"status"`
	Reason    string        `json:"reason,omitempty"`
	Timestamp time.Time     `json:"timestamp"`
}

// NetworkInfo is a sandbox's network as configured.
type NetworkInfo struct {
	Mode           NetworkMode `json:"mode"`
	AllowCIDRs     []string    `json:"allowCidrs,omitempty"`
	AllowHostCIDRs []string    `json:"allowHostCidrs,omitempty"`
	AllowDomains   []string    `json:"allowDomains,omitempty"`
	DenyDomains    []string    `json:"denyDomains,omitempty"`
	DenyCIDRs      []string    `json:"denyCidrs,omitempty"`
	// Default is "allow" or "deny" in internet mode.
	Default string `json:"default,omitempty"`
	// Address is the sandbox's IPv4 address in internet mode.
	Address string `json:"address,omitempty"`
	// Gateway is the host side of the sandbox's link in internet mode.
	Gateway string `json:"gateway,omitempty"`
}

// SandboxList is the body of GET /v1/sandboxes.
type SandboxList struct {
	Sandboxes []Sandbox `json:"sandboxes"`
	// NextPageToken, when set, asks for the next page
	// (?pageToken=...); absent on the last page.
	NextPageToken string `json:"nextPageToken,omitempty"`
}

// MaxListLimit is the most sandboxes one page of GET /v1/sandboxes holds
// (?limit=, default 1000).
const MaxListLimit = 1000

// Health is the body of GET /v1/health.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	// Runtime is the runtime of sandboxes that do not choose one.
	Runtime string `json:"runtime"`
	// Runtimes are the runtimes this daemon can run sandboxes with.
	Runtimes []string `json:"runtimes,omitempty"`
}
