package api

import "time"

// NetworkMode says what a sandbox's network namespace can reach.
type NetworkMode string

const (
	// NetworkNone gives the sandbox only its own loopback.
	NetworkNone NetworkMode = "none"
	// NetworkInternet gives the sandbox a routed veth with NAT to the outside.
	// The host itself, the daemon and private ranges stay unreachable unless
	// listed in AllowCIDRs.
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
	// Limits caps the sandbox's resources; zero fields take the defaults.
	Limits *Limits `json:"limits,omitempty"`
	// Network configures the sandbox's network namespace.
	Network *NetworkOptions `json:"network,omitempty"`
}

// Limits are cgroup limits on a whole sandbox (agent and user code).
type Limits struct {
	// MemoryBytes is the memory limit in bytes (no swap). Minimum 64 MiB.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// MilliCPU is the CPU quota in thousandths of a core (1000 = one core).
	MilliCPU int64 `json:"milliCpu,omitempty"`
	// Pids is the maximum number of tasks (processes and threads). Minimum 32.
	Pids int64 `json:"pids,omitempty"`
}

// NetworkOptions configures a sandbox's network.
type NetworkOptions struct {
	// Mode is "none" or "internet". Default: the daemon's --default-network.
	Mode NetworkMode `json:"mode,omitempty"`
	// AllowCIDRs are addresses otherwise blocked (the host, private ranges)
	// that this sandbox may reach, e.g. "10.1.2.3/32". At most 64.
	AllowCIDRs []string `json:"allowCidrs,omitempty"`
}

// SandboxStatus is where a sandbox is in its lifecycle.
type SandboxStatus string

const (
	StatusCreating SandboxStatus = "creating"
	StatusRunning  SandboxStatus = "running"
	StatusStopped  SandboxStatus = "stopped"
	StatusFailed   SandboxStatus = "failed"
)

// Sandbox describes one sandbox, as returned by ensure, get and list.
type Sandbox struct {
	ID     string        `json:"id"`
	Status SandboxStatus `json:"status"`
	// StatusReason says why the sandbox is in its status (e.g. the failure).
	StatusReason string `json:"statusReason,omitempty"`
	Image        string `json:"image"`
	// Runtime is the OCI runtime that runs the sandbox (crun or runc).
	Runtime    string            `json:"runtime"`
	Labels     map[string]string `json:"labels,omitempty"`
	Limits     Limits            `json:"limits"`
	Network    NetworkInfo       `json:"network"`
	CreatedAt  time.Time         `json:"createdAt"`
	LastUsedAt time.Time         `json:"lastUsedAt"`
	// Created is true in the answer to the call that created the sandbox.
	Created bool `json:"created,omitempty"`
}

// NetworkInfo is a sandbox's network as configured.
type NetworkInfo struct {
	Mode       NetworkMode `json:"mode"`
	AllowCIDRs []string    `json:"allowCidrs,omitempty"`
	// Address is the sandbox's IPv4 address in internet mode.
	Address string `json:"address,omitempty"`
	// Gateway is the host side of the sandbox's link in internet mode.
	Gateway string `json:"gateway,omitempty"`
}

// SandboxList is the body of GET /v1/sandboxes.
type SandboxList struct {
	Sandboxes []Sandbox `json:"sandboxes"`
}

// Health is the body of GET /v1/health.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	Runtime string `json:"runtime"`
}
