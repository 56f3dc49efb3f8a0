package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/network"
)

// Errors of the sandbox domain; the API edge maps each to a code.
var (
	ErrNotFound      = errors.New("sandbox not found")
	ErrInvalid       = errors.New("invalid sandbox configuration")
	ErrImageNotFound = errors.New("image not found")
	ErrUnavailable   = errors.New("sandbox unavailable")
	ErrFailed        = errors.New("sandbox failed to start")
	ErrCapacity      = errors.New("capacity exceeded")
	// ErrRuntimeUnavailable: the sandbox names a runtime this host cannot
	// run (not installed, or it failed the start-up probe).
	ErrRuntimeUnavailable = errors.New("runtime unavailable")
	// ErrUnsupported: the sandbox's runtime cannot do what was asked.
	ErrUnsupported = errors.New("not supported by the sandbox's runtime")
)

// Runtime names. RuntimeGVisor is runsc; the others run containers on the
// host's kernel.
const (
	RuntimeCrun   = "crun"
	RuntimeRunc   = "runc"
	RuntimeGVisor = "gvisor"
)

// Network modes.
const (
	NetworkNone     = "none"
	NetworkInternet = "internet"
)

// Limits are a sandbox's cgroup limits. Zero means "the default".
type Limits struct {
	MemoryBytes int64 `json:"memoryBytes"`
	MilliCPU    int64 `json:"milliCpu"`
	Pids        int64 `json:"pids"`
	// DiskBytes caps the sandbox's writable layer; 0 means no quota (the
	// state directory's filesystem is the limit).
	DiskBytes int64 `json:"diskBytes,omitempty"`
}

// MinDiskBytes is the smallest disk quota (an ext4 filesystem needs room
// for its own metadata).
const MinDiskBytes = 64 << 20

// InstanceTypes are named presets of limits, as in the reference's
// configuration. Explicit limits override them.
var InstanceTypes = map[string]Limits{
	"lite":     {MemoryBytes: 256 << 20, MilliCPU: 250, Pids: 256, DiskBytes: 2 << 30},
	"standard": {MemoryBytes: 1 << 30, MilliCPU: 1000, Pids: 1024, DiskBytes: 8 << 30},
	"heavy":    {MemoryBytes: 4 << 30, MilliCPU: 2000, Pids: 4096, DiskBytes: 20 << 30},
}

// Minimums: below these the agent itself cannot work.
const (
	MinMemoryBytes = 64 << 20
	MinMilliCPU    = 10
	MinPids        = 32
)

// NetworkConfig is a sandbox's network configuration. Its egress policy
// (allowCidrs, denyCidrs, the domain lists and the default) may change
// after creation (Manager.SetNetworkPolicy); mode and allowHostCidrs may not.
type NetworkConfig struct {
	Mode       string   `json:"mode"`
	AllowCIDRs []string `json:"allowCidrs,omitempty"`
	// AllowHostCIDRs are the host's own addresses the sandbox may connect
	// to; AllowCIDRs never open the host.
	AllowHostCIDRs []string `json:"allowHostCidrs,omitempty"`
	// AllowDomains and DenyDomains are domain patterns ("a.example",
	// "*.a.example"), canonical and sorted.
	AllowDomains []string `json:"allowDomains,omitempty"`
	DenyDomains  []string `json:"denyDomains,omitempty"`
	// DenyCIDRs are destinations never reached, whatever else allows them.
	DenyCIDRs []string `json:"denyCidrs,omitempty"`
	// Default is "allow" or "deny": what happens to destinations no entry
	// names. Resolve sets it ("deny" when an allow list is given); a
	// config stored before policies existed has none, which means allow.
	Default string `json:"default,omitempty"`
}

// Egress defaults.
const (
	EgressAllow = "allow"
	EgressDeny  = "deny"
)

// MaxPolicyEntries bounds the entries of a network policy: allowDomains,
// denyDomains, allowCidrs and denyCidrs together.
const MaxPolicyEntries = 256

// PolicyError is an invalid network policy, naming the offending entry.
type PolicyError struct {
	// Entry is the field and index, e.g. "allowDomains[2]", or the field.
	Entry string
	// Value is the entry's value as given ("" for the field as a whole).
	Value  string
	Reason string
}

func (e *PolicyError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("network policy: %s: %s", e.Entry, e.Reason)
	}
	return fmt.Sprintf("network policy: %s %q: %s", e.Entry, e.Value, e.Reason)
}

// Unwrap makes a PolicyError an ErrInvalid.
func (e *PolicyError) Unwrap() error { return ErrInvalid }

func policyErr(entry, value, format string, args ...any) error {
	return &PolicyError{Entry: entry, Value: value, Reason: fmt.Sprintf(format, args...)}
}

// Config is what a sandbox is created with. It is stored (as JSON) in the
// registry and never changes after creation.
type Config struct {
	Image        string            `json:"image"`
	Env          map[string]string `json:"env,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	InstanceType string            `json:"instanceType,omitempty"`
	Limits       Limits            `json:"limits"`
	Network      NetworkConfig     `json:"network"`
	// SleepAfter is how long the sandbox may be idle before it is put to
	// sleep; changeable after creation.
	SleepAfter time.Duration `json:"sleepAfter"`
	// KeepAlive disables sleeping; changeable after creation.
	KeepAlive bool `json:"keepAlive,omitempty"`
	// Runtime is crun, runc or gvisor. Sandboxes created before runtimes
	// were chosen per sandbox have none here; their registry row names
	// the runtime.
	Runtime string `json:"runtime,omitempty"`

	// ImageDigest is the config digest the image name resolved to at
	// creation (empty for the host image); the sandbox boots from it even
	// if the name is later re-pointed.
	ImageDigest string `json:"imageDigest,omitempty"`

	// Snapshot is the snapshot the sandbox was forked from, and
	// SnapshotLayer its layer, mounted above the image's layers.
	Snapshot      string `json:"snapshot,omitempty"`
	SnapshotLayer string `json:"snapshotLayer,omitempty"`
	// SnapshotMemory says the snapshot holds memory (gVisor): the fork's
	// first start restores it (memfork.go).
	SnapshotMemory bool `json:"snapshotMemory,omitempty"`

	// Volumes are the named volumes mounted into the sandbox whenever it
	// starts (docs/storage.md).
	Volumes []VolumeMount `json:"volumes,omitempty"`
}

// Policy holds the daemon-wide defaults and caps applied to every Config.
type Policy struct {
	DefaultImage   string
	DefaultLimits  Limits
	MaxLimits      Limits
	DefaultNetwork string
	// SandboxSubnet is the pool of sandbox addresses: an allowCidrs entry
	// inside it is refused, because sandboxes never reach each other.
	SandboxSubnet netip.Prefix
	// DefaultSleepAfter applies when a sandbox does not choose;
	// MaxSleepAfter caps what it may choose.
	DefaultSleepAfter, MaxSleepAfter time.Duration
	// DefaultRuntime applies when a sandbox does not choose; Runtimes are
	// those the host can run.
	DefaultRuntime string
	Runtimes       []string
	// InstanceTypeRuntimes name the runtime of an instance type's
	// sandboxes that name none themselves (--instance-type-runtimes).
	InstanceTypeRuntimes map[string]string
}

// Bounds of the free-form parts of a Config.
const (
	maxEnvVars     = 1024
	maxEnvBytes    = 256 << 10
	maxLabels      = 32
	maxLabelKey    = 63
	maxLabelValue  = 256
	maxAllowCIDRs  = 64
	maxImageLength = 256
)

var (
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKey = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
)

// Resolve fills the defaults into c and checks every field against the
// policy. Errors wrap ErrInvalid and say which field is wrong and why.
func (p Policy) Resolve(c Config) (Config, error) {
	if c.Image == "" {
		c.Image = p.DefaultImage
	}
	// Empty and absent are the same: keep one form, so that equal
	// configurations compare equal (the warm pool relies on it).
	if len(c.Env) == 0 {
		c.Env = nil
	}
	if len(c.Labels) == 0 {
		c.Labels = nil
	}
	if len(c.Network.AllowCIDRs) == 0 {
		c.Network.AllowCIDRs = nil
	}
	if len(c.Network.AllowHostCIDRs) == 0 {
		c.Network.AllowHostCIDRs = nil
	}
	c.Network = compactPolicy(c.Network)
	if len(c.Image) > maxImageLength {
		return c, invalid("image name is longer than %d bytes", maxImageLength)
	}
	if err := checkEnv(c.Env); err != nil {
		return c, err
	}
	if err := checkLabels(c.Labels); err != nil {
		return c, err
	}
	if c.InstanceType != "" {
		preset, ok := InstanceTypes[c.InstanceType]
		if !ok {
			return c, invalid("instance type %q: want lite, standard or heavy", c.InstanceType)
		}
		// A preset is not the caller's explicit request: it shrinks to fit
		// a smaller host rather than fail.
		c.Limits = overlay(clamp(preset, p.MaxLimits), c.Limits)
		if c.Runtime == "" {
			c.Runtime = p.InstanceTypeRuntimes[c.InstanceType]
		}
	}
	var err error
	if c.Limits, err = p.resolveLimits(c.Limits); err != nil {
		return c, err
	}
	if c.SleepAfter, err = p.resolveSleepAfter(c.SleepAfter); err != nil {
		return c, err
	}
	if c.Runtime, err = p.resolveRuntime(c.Runtime); err != nil {
		return c, err
	}
	if c.Network.Mode == "" {
		c.Network.Mode = p.DefaultNetwork
	}
	if c.Network.Mode != NetworkNone && c.Network.Mode != NetworkInternet {
		return c, invalid("network mode %q: want %q or %q", c.Network.Mode, NetworkNone, NetworkInternet)
	}
	if c.Network, err = p.resolveNetwork(c.Network); err != nil {
		return c, err
	}
	if len(c.Volumes) == 0 {
		c.Volumes = nil
	}
	if err := checkVolumes(c.Volumes); err != nil {
		return c, err
	}
	return c, nil
}

// compactPolicy makes empty lists absent, so that equal configurations
// compare equal.
func compactPolicy(n NetworkConfig) NetworkConfig {
	for _, l := range []*[]string{&n.AllowCIDRs, &n.AllowHostCIDRs, &n.AllowDomains, &n.DenyDomains, &n.DenyCIDRs} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	return n
}

// resolveNetwork validates n's policy and returns it canonical: CIDRs
// masked, domains in canonical form, sorted and without duplicates, and the
// default filled in ("deny" when allowDomains or allowCidrs are given,
// "allow" otherwise). Errors are *PolicyError naming the entry.
func (p Policy) resolveNetwork(n NetworkConfig) (NetworkConfig, error) {
	n = compactPolicy(n)
	if total := len(n.AllowDomains) + len(n.DenyDomains) + len(n.AllowCIDRs) + len(n.DenyCIDRs); total > MaxPolicyEntries {
		return n, policyErr("network", "", "%d entries in allowDomains, denyDomains, allowCidrs and denyCidrs; at most %d are allowed", total, MaxPolicyEntries)
	}
	if len(n.AllowHostCIDRs) > maxAllowCIDRs {
		return n, policyErr("allowHostCidrs", "", "%d given; at most %d are allowed", len(n.AllowHostCIDRs), maxAllowCIDRs)
	}
	if n.Mode != NetworkInternet {
		for _, f := range []struct {
			name string
			n    int
		}{{"allowCidrs", len(n.AllowCIDRs)}, {"allowHostCidrs", len(n.AllowHostCIDRs)}, {"allowDomains", len(n.AllowDomains)}, {"denyDomains", len(n.DenyDomains)}, {"denyCidrs", len(n.DenyCIDRs)}} {
			if f.n > 0 {
				return n, policyErr(f.name, "", "needs network mode %q", NetworkInternet)
			}
		}
	}
	for _, f := range []struct {
		name  string
		cidrs []string
	}{{"allowCidrs", n.AllowCIDRs}, {"allowHostCidrs", n.AllowHostCIDRs}, {"denyCidrs", n.DenyCIDRs}} {
		for i, s := range f.cidrs {
			pfx, err := parseCIDR(s)
			if err != nil {
				return n, policyErr(fmt.Sprintf("%s[%d]", f.name, i), s, "%v", err)
			}
			f.cidrs[i] = pfx.String()
		}
	}
	// An entry that holds the subnet ("0.0.0.0/0") still means the rest;
	// one inside it could only ever name another sandbox or a gateway.
	for i, s := range n.AllowCIDRs {
		if pfx := netip.MustParsePrefix(s); p.SandboxSubnet.IsValid() && p.SandboxSubnet.Contains(pfx.Addr()) && pfx.Bits() >= p.SandboxSubnet.Bits() {
			return n, policyErr(fmt.Sprintf("allowCidrs[%d]", i), s, "inside the sandbox subnet %s: sandboxes never reach each other, and the host's addresses need allowHostCidrs", p.SandboxSubnet)
		}
	}
	for _, f := range []struct {
		name string
		l    *[]string
	}{{"allowDomains", &n.AllowDomains}, {"denyDomains", &n.DenyDomains}} {
		for i, s := range *f.l {
			d, err := network.ParseDomain(s)
			if err != nil {
				return n, policyErr(fmt.Sprintf("%s[%d]", f.name, i), s, "%v", err)
			}
			(*f.l)[i] = d
		}
		slices.Sort(*f.l)
		*f.l = slices.Compact(*f.l)
	}
	switch n.Default {
	case "":
		n.Default = EgressAllow
		if len(n.AllowDomains) > 0 || len(n.AllowCIDRs) > 0 {
			n.Default = EgressDeny
		}
		if n.Mode != NetworkInternet {
			n.Default = ""
		}
	case EgressAllow, EgressDeny:
		if n.Mode != NetworkInternet {
			return n, policyErr("default", n.Default, "needs network mode %q", NetworkInternet)
		}
	default:
		return n, policyErr("default", n.Default, "want %q or %q", EgressAllow, EgressDeny)
	}
	return n, nil
}

func (p Policy) resolveRuntime(name string) (string, error) {
	if name == "" {
		name = p.DefaultRuntime
	}
	switch name {
	case RuntimeCrun, RuntimeRunc, RuntimeGVisor:
	default:
		return name, invalid("runtime %q: want %s, %s or %s", name, RuntimeCrun, RuntimeRunc, RuntimeGVisor)
	}
	if !slices.Contains(p.Runtimes, name) {
		return name, fmt.Errorf("%w: runtime %q is not available on this host (available: %s)", ErrRuntimeUnavailable, name, strings.Join(p.Runtimes, ", "))
	}
	return name, nil
}

// overlay returns preset with every non-zero field of explicit laid over it.
func overlay(preset, explicit Limits) Limits {
	for _, f := range []struct{ dst, src *int64 }{
		{&preset.MemoryBytes, &explicit.MemoryBytes}, {&preset.MilliCPU, &explicit.MilliCPU},
		{&preset.Pids, &explicit.Pids}, {&preset.DiskBytes, &explicit.DiskBytes},
	} {
		if *f.src != 0 {
			*f.dst = *f.src
		}
	}
	return preset
}

func clamp(l, max Limits) Limits {
	l.MemoryBytes = min(l.MemoryBytes, max.MemoryBytes)
	l.MilliCPU = min(l.MilliCPU, max.MilliCPU)
	l.Pids = min(l.Pids, max.Pids)
	l.DiskBytes = min(l.DiskBytes, max.DiskBytes)
	return l
}

// MinSleepAfter is the shortest idle time a sandbox may ask for.
const MinSleepAfter = time.Second

func (p Policy) resolveSleepAfter(d time.Duration) (time.Duration, error) {
	if d == 0 {
		d = p.DefaultSleepAfter
	}
	if d < MinSleepAfter || d > p.MaxSleepAfter {
		return d, invalid("sleepAfter is %s; allowed: %s to %s", d, MinSleepAfter, p.MaxSleepAfter)
	}
	return d, nil
}

func (p Policy) resolveLimits(l Limits) (Limits, error) {
	fields := []struct {
		name     string
		v        *int64
		def, max int64
		min      int64
		unit     string
	}{
		{"memoryBytes", &l.MemoryBytes, p.DefaultLimits.MemoryBytes, p.MaxLimits.MemoryBytes, MinMemoryBytes, "bytes"},
		{"milliCpu", &l.MilliCPU, p.DefaultLimits.MilliCPU, p.MaxLimits.MilliCPU, MinMilliCPU, "thousandths of a CPU"},
		{"pids", &l.Pids, p.DefaultLimits.Pids, p.MaxLimits.Pids, MinPids, "tasks"},
	}
	for _, f := range fields {
		if *f.v == 0 {
			*f.v = f.def
		}
		if *f.v < f.min || *f.v > f.max {
			return l, invalid("limits.%s is %d %s; allowed: %d to %d", f.name, *f.v, f.unit, f.min, f.max)
		}
	}
	if l.DiskBytes != 0 && (l.DiskBytes < MinDiskBytes || l.DiskBytes > p.MaxLimits.DiskBytes) {
		return l, invalid("limits.diskBytes is %d bytes; allowed: %d to %d, or 0 for no quota", l.DiskBytes, int64(MinDiskBytes), p.MaxLimits.DiskBytes)
	}
	return l, nil
}

func checkEnv(env map[string]string) error {
	if len(env) > maxEnvVars {
		return invalid("%d env vars given; at most %d are allowed", len(env), maxEnvVars)
	}
	size := 0
	for k, v := range env {
		if !envName.MatchString(k) {
			return invalid("env var name %q is not a valid name ([A-Za-z_][A-Za-z0-9_]*)", k)
		}
		if hasNUL(v) {
			return invalid("env var %s has a NUL byte in its value", k)
		}
		size += len(k) + len(v) + 2
	}
	if size > maxEnvBytes {
		return invalid("env vars take %d bytes; at most %d are allowed", size, maxEnvBytes)
	}
	return nil
}

func checkLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return invalid("%d labels given; at most %d are allowed", len(labels), maxLabels)
	}
	for k, v := range labels {
		if len(k) > maxLabelKey || !labelKey.MatchString(k) {
			return invalid("label key %q: want 1-%d of [A-Za-z0-9._/-], starting and ending alphanumeric", k, maxLabelKey)
		}
		if len(v) > maxLabelValue || hasNUL(v) {
			return invalid("label %s: value longer than %d bytes or has a NUL byte", k, maxLabelValue)
		}
	}
	return nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	if pfx, err := netip.ParsePrefix(s); err == nil {
		if !pfx.Addr().Is4() {
			return netip.Prefix{}, fmt.Errorf("%q: only IPv4 is supported", s)
		}
		return pfx.Masked(), nil
	}
	addr, err := netip.ParseAddr(s)
	if err != nil || !addr.Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 address or CIDR", s)
	}
	return netip.PrefixFrom(addr, 32), nil
}

func hasNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
