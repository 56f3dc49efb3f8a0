package runtime

import (
	"fmt"
	"sync"

	"github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Paths inside every sandbox that belong to sandboxd.
const (
	// AgentPath is where the agent binary is bind-mounted, read-only.
	AgentPath = "/.sandboxd/agent"
	// SpawnPath is where the spawn wrapper's binary is bind-mounted,
	// read-only, in crun and runc sandboxes (the agent's --spawn flag names it to
	// the agent).
	SpawnPath = "/.sandboxd/spawn"
	// TranspilePath is where the code interpreter's TypeScript helper is
	// bind-mounted, read-only, in every sandbox; the agent (whose
	// --transpile flag defaults to it) starts it on the first TypeScript
	// cell.
	TranspilePath = "/.sandboxd/transpile"
	// GVisorRunDir is the agent's socket directory in gVisor sandboxes,
	// bind-mounted from the host: runsc cannot hand the agent a
	// descriptor (it has no --preserve-fds), so there the agent binds its
	// socket itself (a host socket through --host-uds=create).
	GVisorRunDir = "/.sandboxd/run"
	// GVisorAgentSocket is the agent's socket inside GVisorRunDir.
	GVisorAgentSocket = GVisorRunDir + "/agent.sock"
	// GVisorNamerFIFO is where a warm gVisor sandbox's namer tells the
	// agent how its naming went: the FIFO the agent makes in its own run
	// directory (the agent's DefaultRunDir, on gVisor's tmpfs; see the
	// agent's namer.go).
	GVisorNamerFIFO = "/run/sandboxd-agent/namer"
)

// AgentListenFD is the descriptor on which the agent finds its listening
// socket: the daemon binds the socket on the host, in a directory the
// sandbox cannot see, and hands it to the container's init, so nothing in
// the sandbox can replace it.
const AgentListenFD = 3

// defaultCaps is the capability set of every sandbox process: Docker's
// default set without CAP_NET_RAW (no raw sockets, so no spoofed packets;
// ping still works through ping_group_range) and without CAP_MKNOD.
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// maskedPaths and readonlyPaths hide or freeze the parts of /proc and /sys
// that leak host information or allow host-wide changes.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap", "/sys/kernel/debug",
}

var readonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// ociVersion is the spec version sandboxd writes: the oldest that has
// everything it uses, so that the crun and runc of stable distributions
// (which reject versions newer than they know) accept it.
const ociVersion = "1.0.2"

// Resources are a sandbox's cgroup limits.
type Resources struct {
	MemoryBytes int64
	MilliCPU    int64
	Pids        int64
	// CPUs is the cpuset ("0-1,3"), so that what nproc counts (the CPU
	// affinity) matches the CPU limit; empty: every CPU.
	CPUs string
}

// SpecOptions describe one sandbox container.
type SpecOptions struct {
	Hostname    string
	Rootfs      string
	Args        []string
	Env         []string
	Mounts      []specs.Mount // after the standard ones, in order
	NetnsPath   string
	CgroupsPath string
	Resources   Resources
	Annotations map[string]string
	// ProcOptions are extra mount options of /proc (see HidePIDOptions).
	ProcOptions []string
	// HostUIDBase, when not zero, runs the sandbox in a user namespace of
	// its own: UIDs and GIDs 0-65535 inside are HostUIDBase and up on the
	// host, so its root is an unprivileged user of the host.
	HostUIDBase uint32
	// UserNSPath, with HostUIDBase, names the user namespace the runtime
	// joins instead of making one: made for this sandbox alone, owned by
	// its root (rootfs.IDRange.OpenUserNS), so that the per-user counts
	// the kernel keeps add up on that host user, not on the host's root.
	UserNSPath string
	// Sysfs, when set, is a sysfs the daemon mounted for the sandbox
	// (rootfs.MountSysfs), bound read-only at /sys instead of a sysfs the
	// runtime mounts: a runtime cannot mount one in a user namespace that
	// does not own the sandbox's network namespace.
	Sysfs string
}

// UserNSSize is how many IDs a sandbox's user namespace maps.
const UserNSSize = 65536

// HidePIDOptions mount /proc so that a process sees only the processes of
// its own user, unless it is in group 0 (the agent and root user code):
// a non-root session user cannot read root's command lines or
// environments, nor list root's processes. runsc refuses these options
// (gVisor's /proc is its own).
var HidePIDOptions = []string{"hidepid=2", "gid=0"}

// NewSpec returns the OCI runtime spec of a sandbox: its own mount, PID,
// network, IPC, UTS and cgroup namespaces; cgroup limits; the default
// seccomp profile; the default capability set; no_new_privs; masked /proc
// and /sys paths. The process is the agent, as init, kept out of the OOM
// killer's choice by its cgroup: user code runs in a child cgroup with lower
// limits. (A negative oom_score_adj would need CAP_SYS_RESOURCE, which some
// hosts, such as VMs that run sandboxd inside a container, do not grant.)
func NewSpec(o SpecOptions) (*specs.Spec, error) {
	swap := o.Resources.MemoryBytes // memory+swap == memory: no swap
	period := uint64(100_000)
	spec := &specs.Spec{
		Version:  ociVersion,
		Hostname: o.Hostname,
		Root:     &specs.Root{Path: o.Rootfs},
		Process: &specs.Process{
			Args: o.Args,
			Env:  o.Env,
			Cwd:  "/",
			User: specs.User{UID: 0, GID: 0},
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  defaultCaps,
				Effective: defaultCaps,
				Permitted: defaultCaps,
			},
			Rlimits:         []specs.POSIXRlimit{nofileLimit()},
			NoNewPrivileges: true,
		},
		Mounts: append(standardMounts(o.ProcOptions, o.Sysfs), o.Mounts...),
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace, Path: o.NetnsPath},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
				{Type: specs.CgroupNamespace},
			},
			CgroupsPath: o.CgroupsPath,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &o.Resources.MemoryBytes, Swap: &swap},
				Pids:    &specs.LinuxPids{Limit: &o.Resources.Pids},
			},
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
			Sysctl:        map[string]string{},
		},
		Annotations: o.Annotations,
	}
	if o.Resources.MilliCPU > 0 {
		quota := o.Resources.MilliCPU * int64(period) / 1000
		spec.Linux.Resources.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if o.Resources.CPUs != "" {
		if spec.Linux.Resources.CPU == nil {
			spec.Linux.Resources.CPU = &specs.LinuxCPU{}
		}
		spec.Linux.Resources.CPU.Cpus = o.Resources.CPUs
	}
	if o.HostUIDBase != 0 {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: o.HostUIDBase, Size: UserNSSize}}
		spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: o.UserNSPath})
		spec.Linux.UIDMappings, spec.Linux.GIDMappings = m, m
	}
	sc, err := defaultSeccomp(spec)
	if err != nil {
		return nil, err
	}
	spec.Linux.Seccomp = sc
	return spec, nil
}

// nofileLimit allows up to 1Mi open files, or the daemon's own hard limit
// if that is lower: raising a hard limit needs CAP_SYS_RESOURCE, which the
// runtime may not have.
func nofileLimit() specs.POSIXRlimit {
	n := uint64(1 << 20)
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err == nil && cur.Max < n {
		n = cur.Max
	}
	return specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: n, Soft: n}
}

func standardMounts(procOptions []string, sysfs string) []specs.Mount {
	sys := specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}}
	if sysfs != "" {
		sys = specs.Mount{Destination: "/sys", Type: "bind", Source: sysfs, Options: []string{"bind", "nosuid", "noexec", "nodev", "ro"}}
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: append([]string{"nosuid", "noexec", "nodev"}, procOptions...)},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		sys,
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=65536k"}},
	}
}

// The seccomp profile depends only on the capability set, which is the
// same for every sandbox, so it is computed once.
var seccompOnce = sync.OnceValues(func() (*specs.LinuxSeccomp, error) {
	return seccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{
		Capabilities: &specs.LinuxCapabilities{Bounding: defaultCaps},
	}})
})

func defaultSeccomp(*specs.Spec) (*specs.LinuxSeccomp, error) {
	sc, err := seccompOnce()
	if err != nil {
		return nil, fmt.Errorf("building the default seccomp profile: %w", err)
	}
	return sc, nil
}
