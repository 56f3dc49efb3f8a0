// Package daemon wires sandboxd together: it validates the configuration,
// prepares the host (state directory, token, OCI runtime, cgroups, host
// image, network), recovers the registry, and serves the API until its
// context ends. It owns the start-up and shutdown order and nothing else.
package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/httpserve"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/network"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// maxWarmPool bounds --warm-pool. A pool sandbox idles in a few MB of
// host memory and holds capacity like a running one (a full host keeps a
// smaller pool), so a pool sized for the bursts of creates the host must
// answer at once, hundreds, is fine; the bound only catches typos.
const maxWarmPool = 4096

// Config is everything sandboxd can be told, validated once by Validate.
type Config struct {
	// Listen is the API's TCP address.
	Listen string
	// StateDir holds the registry, the token and the sandboxes' disks.
	StateDir string
	// RunDir holds what must not outlive a reboot: agent sockets, netns
	// mounts, the runtime's state.
	RunDir string
	// Runtime is auto, crun or runc: the runtime of containers on the
	// host's kernel.
	Runtime string
	// DefaultRuntime is the runtime of sandboxes that do not choose: crun,
	// runc or gvisor; empty: the one Runtime picked.
	DefaultRuntime string
	// RunscPath is gVisor's runsc; empty: next to sandboxd, else $PATH.
	RunscPath string
	// GVisorPlatform is runsc's platform: auto, systrap, ptrace or kvm.
	GVisorPlatform string
	// AgentPath is the static agent binary bind-mounted into sandboxes.
	AgentPath string
	// SpawnPath is the spawn wrapper's binary (sandbox-spawn) beside
	// AgentPath, bind-mounted into crun and runc sandboxes; "" when there
	// is none. Set by Validate, never by a flag.
	SpawnPath string
	// TranspilePath is the code interpreter's TypeScript helper
	// (sandbox-transpile) beside AgentPath, bind-mounted into every
	// sandbox; "" when there is none (TypeScript cells then fail). Set by
	// Validate, never by a flag.
	TranspilePath string
	// DefaultNetwork is the network mode of sandboxes that do not choose.
	DefaultNetwork string
	// Subnet is the pool of addresses of internet-mode sandboxes.
	Subnet string
	// DNS are the name servers of internet-mode sandboxes; empty means the
	// host's non-loopback ones.
	DNS []string
	// DNSUpstream are the servers (IPv4, optionally with ":port") the DNS
	// forwarder asks; empty means the DNS servers on port 53.
	DNSUpstream []string
	// Blocked are the destinations no sandbox reaches unless its
	// allowCidrs name them: "private" (network.DefaultBlocked), "host"
	// (the host's own subnets and gateways, found at start) and IPv4 CIDRs.
	// nil means "private" and "host".
	Blocked []string
	// BucketEndpointAllow are addresses and CIDRs (IPv4 or IPv6) a
	// tenant's bucket mount may name although they are kept out of
	// tenants' reach (loopback, link-local, the host's own addresses, the
	// sandbox subnet; bucket.EndpointGuard).
	BucketEndpointAllow []string
	// HostAccessAllow are IPv4 addresses and CIDRs of the host a tenant's
	// sandbox may name in its network's allowHostCidrs; nil: none (only
	// the admin's sandboxes may name host addresses).
	HostAccessAllow []string
	// InstanceTypeRuntimes are TYPE=RUNTIME pairs: a sandbox created with
	// that instance type and no runtime of its own runs on that runtime
	// (crun, runc or gvisor). nil: instance types name no runtime.
	InstanceTypeRuntimes []string
	// CgroupParent is the cgroup (one name, below every hierarchy's root)
	// that holds the daemon's sandbox cgroups. Two daemons on one host
	// need different ones.
	CgroupParent string
	// NetTable is the nftables table the daemon owns.
	NetTable string
	// IfacePrefix starts the host-side interface name of every sandbox
	// (1-3 letters). Two daemons on one host need different prefixes.
	IfacePrefix string
	// DefaultImage is the image of sandboxes that do not choose ("host",
	// "base", or any stored image).
	DefaultImage string
	// RegistryAuth is the docker config file with registry credentials for
	// image pulls; empty: $DOCKER_CONFIG or ~/.docker/config.json.
	RegistryAuth string
	// MaxImageBytes bounds an image's unpacked size and an upload's size.
	MaxImageBytes int64
	// MaxBackupBytes bounds one backup's tar stream (at most 4 GiB: one
	// S3 PUT takes 5).
	MaxBackupBytes int64
	// BackupStore is where backups live: "" for <state>/backups, or
	// s3://BUCKET[/PREFIX] at BackupStoreEndpoint (region
	// BackupStoreRegion) with the credentials of the daemon's secret
	// BackupStoreSecret.
	BackupStore, BackupStoreEndpoint, BackupStoreRegion, BackupStoreSecret string
	// ImageCacheDir caches base image builds across state directories;
	// empty: no cache.
	ImageCacheDir string
	// Preview URLs: {PreviewScheme}://{port}-{id}-{token}.{PreviewDomain}[:{PreviewPort}]/,
	// served on PreviewListen (empty: the API listener) as well as on the
	// API listener. PreviewPort 0 means the preview listener's port.
	PreviewDomain, PreviewScheme, PreviewListen string
	PreviewPort                                 int
	// BodyTimeout bounds the time to read a request body the daemon reads
	// whole (JSON); streamed bodies are not bounded.
	BodyTimeout time.Duration
	// PreviewLimits bound the preview proxy: response header bytes, time
	// to headers, requests in flight per sandbox and in all.
	PreviewLimits proxy.Limits
	// PreviewJoin joins public previews' client connections to their
	// services' in the kernel after the first request (proxy.Options);
	// off by default (--preview-join, docs/api-ports.md says why).
	PreviewJoin bool
	// MaxConnsPerSource bounds the connections one source address (an
	// IPv6 source's /64) keeps open on each public listener (0: only the
	// listener's bound); ConnsPerSourceExempt lists the sources it does not
	// count (httpserve.ParseExempt's terms; nil: loopback).
	MaxConnsPerSource    int
	ConnsPerSourceExempt []string
	// Limits: defaults for sandboxes that do not choose, and caps.
	DefaultLimits, MaxLimits sandbox.Limits
	// SleepAfter is the default idle time before a sandbox sleeps;
	// MaxSleepAfter caps what a sandbox may ask for.
	SleepAfter, MaxSleepAfter time.Duration
	// IdleCheck is how often idle sandboxes are looked for.
	IdleCheck time.Duration
	// Capacity bounds what the host runs.
	Capacity sandbox.Capacity
	// WarmPool is how many default sandboxes are kept started ahead.
	WarmPool int
	// UserNS gives new crun sandboxes a user namespace of their own, when
	// the kernel can (probed at start); UserNSBase is the first host UID
	// of their ranges.
	UserNS     bool
	UserNSBase uint
	Version    string
	// TLSCert and TLSKey are PEM files; when both are set the API and
	// preview listeners serve HTTPS, and SIGHUP reloads them.
	TLSCert, TLSKey string
	// Cluster makes the daemon a node of a cluster (docs/cluster.md).
	Cluster Cluster
	// Banner: once listening, print for a person where the daemon is, where
	// its token is and a first command (text logs only).
	Banner bool
}

// Validate checks c and fills in what can be derived.
func (c *Config) Validate() error {
	var errs []error
	if c.Listen == "" {
		errs = append(errs, errors.New("--listen is empty"))
	}
	for name, dir := range map[string]*string{"--state-dir": &c.StateDir, "--run-dir": &c.RunDir} {
		if !filepath.IsAbs(*dir) {
			errs = append(errs, fmt.Errorf("%s %q: need an absolute path", name, *dir))
		}
		*dir = filepath.Clean(*dir)
	}
	// Agent sockets live at <run-dir>/sandboxes/<key>/agent.sock, and a
	// unix socket path has at most 107 bytes.
	if len(c.RunDir) > 60 {
		errs = append(errs, fmt.Errorf("--run-dir %q is too long for unix socket paths (at most 60 bytes)", c.RunDir))
	}
	if !validLockName(c.CgroupParent) {
		errs = append(errs, fmt.Errorf("--cgroup-parent %q: want 1-64 letters, digits, '.', '_' or '-'", c.CgroupParent))
	}
	if !validLockName(c.NetTable) {
		errs = append(errs, fmt.Errorf("--nft-table %q: want 1-64 letters, digits, '.', '_' or '-'", c.NetTable))
	}
	if !validLockName(c.IfacePrefix) {
		errs = append(errs, fmt.Errorf("--iface-prefix %q: want letters", c.IfacePrefix))
	}
	switch c.Runtime {
	case "auto", "crun", "runc":
	default:
		errs = append(errs, fmt.Errorf("--runtime %q: want auto, crun or runc", c.Runtime))
	}
	switch c.DefaultRuntime {
	case "", sandbox.RuntimeGVisor:
	case sandbox.RuntimeCrun, sandbox.RuntimeRunc:
		// A crun or runc default is the host-kernel runtime to use.
		if c.Runtime == "auto" {
			c.Runtime = c.DefaultRuntime
		} else if c.Runtime != c.DefaultRuntime {
			errs = append(errs, fmt.Errorf("--default-runtime %s contradicts --runtime %s", c.DefaultRuntime, c.Runtime))
		}
	default:
		errs = append(errs, fmt.Errorf("--default-runtime %q: want crun, runc or gvisor", c.DefaultRuntime))
	}
	if !slices.Contains(runtime.Platforms, c.GVisorPlatform) {
		errs = append(errs, fmt.Errorf("--gvisor-platform %q: want one of %s", c.GVisorPlatform, strings.Join(runtime.Platforms, ", ")))
	}
	switch c.DefaultNetwork {
	case sandbox.NetworkNone, sandbox.NetworkInternet:
	default:
		errs = append(errs, fmt.Errorf("--default-network %q: want none or internet", c.DefaultNetwork))
	}
	if c.AgentPath == "" {
		exe, err := os.Executable()
		if err == nil {
			c.AgentPath = filepath.Join(filepath.Dir(exe), "sandbox-agent")
		}
	}
	if fi, err := os.Stat(c.AgentPath); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		errs = append(errs, fmt.Errorf("agent binary %q not found or not executable: build it with `make build` or pass --agent", c.AgentPath))
	}
	// The spawn wrapper's own binary, beside the agent; without it the
	// agent re-executes itself as the wrapper (slower to start).
	c.SpawnPath = ""
	spawnPath := filepath.Join(filepath.Dir(c.AgentPath), "sandbox-spawn")
	if isExecutable(spawnPath) {
		c.SpawnPath = spawnPath
	}
	// The TypeScript helper, beside the agent; without it TypeScript
	// cells fail.
	c.TranspilePath = ""
	if path := filepath.Join(filepath.Dir(c.AgentPath), "sandbox-transpile"); isExecutable(path) {
		c.TranspilePath = path
	}
	if c.DefaultImage == "" {
		c.DefaultImage = rootfs.HostImageName
	} else if c.DefaultImage != rootfs.HostImageName {
		if err := image.ValidateName(c.DefaultImage); err != nil {
			errs = append(errs, fmt.Errorf("--default-image: %w", err))
		}
	}
	if c.ImageCacheDir != "" && !filepath.IsAbs(c.ImageCacheDir) {
		errs = append(errs, fmt.Errorf("--image-cache-dir %q: need an absolute path", c.ImageCacheDir))
	}
	if ncfg, err := c.networkConfig(); err != nil {
		errs = append(errs, err)
	} else if err := ncfg.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("network flags (--subnet, --dns, --blocked, --nft-table, --iface-prefix): %w", err))
	}
	if _, err := parseUpstreams(c.DNSUpstream); err != nil {
		errs = append(errs, err)
	}
	for _, l := range []struct{ flag, addr string }{{"--listen", c.Listen}, {"--preview-listen", c.PreviewListen}} {
		if err := checkListenAddr(l.addr); l.addr != "" && err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", l.flag, l.addr, err))
		}
	}
	if _, err := prefixes("--bucket-endpoint-allow", c.BucketEndpointAllow); err != nil {
		errs = append(errs, err)
	}
	if _, err := hostAccessPrefixes(c.HostAccessAllow); err != nil {
		errs = append(errs, err)
	}
	if _, err := instanceTypeRuntimes(c.InstanceTypeRuntimes); err != nil {
		errs = append(errs, err)
	}
	for _, l := range []struct {
		name     string
		def, max int64
	}{
		{"memory", c.DefaultLimits.MemoryBytes, c.MaxLimits.MemoryBytes},
		{"cpu", c.DefaultLimits.MilliCPU, c.MaxLimits.MilliCPU},
		{"pids", c.DefaultLimits.Pids, c.MaxLimits.Pids},
	} {
		if l.def <= 0 || l.max <= 0 || l.def > l.max {
			errs = append(errs, fmt.Errorf("default %s limit %d must be positive and at most the maximum %d", l.name, l.def, l.max))
		}
	}
	if c.MaxBackupBytes > maxBackupBytes {
		errs = append(errs, fmt.Errorf("--max-backup-size %d: at most 4Gi", c.MaxBackupBytes))
	}
	if c.MaxBackupBytes <= 0 {
		c.MaxBackupBytes = maxBackupBytes
	}
	if c.BackupStore != "" {
		if _, err := parseBackupStore(c.BackupStore); err != nil {
			errs = append(errs, err)
		} else if c.BackupStoreEndpoint == "" || c.BackupStoreSecret == "" {
			errs = append(errs, errors.New("an s3:// --backup-store needs --backup-store-endpoint and --backup-store-secret"))
		}
	}
	if c.SleepAfter < sandbox.MinSleepAfter || c.SleepAfter > c.MaxSleepAfter {
		errs = append(errs, fmt.Errorf("--sleep-after %s must be between %s and --max-sleep-after (%s)", c.SleepAfter, sandbox.MinSleepAfter, c.MaxSleepAfter))
	}
	if c.UserNSBase == 0 {
		c.UserNSBase = sandbox.DefaultUserNSBase
	}
	if c.UserNSBase < rootfs.IDRangeSize || c.UserNSBase > 1<<32-1-rootfs.IDRangeSize {
		errs = append(errs, fmt.Errorf("--userns-base %d: want %d to %d", c.UserNSBase, rootfs.IDRangeSize, uint64(1<<32-1-rootfs.IDRangeSize)))
	}
	if c.WarmPool < 0 || c.WarmPool > maxWarmPool {
		errs = append(errs, fmt.Errorf("--warm-pool %d: want 0 to %d", c.WarmPool, maxWarmPool))
	}
	if c.IdleCheck <= 0 {
		errs = append(errs, fmt.Errorf("--idle-check %s must be positive", c.IdleCheck))
	}
	if c.Capacity.MemoryBudget != 0 && c.Capacity.MemoryBudget < c.DefaultLimits.MemoryBytes {
		errs = append(errs, fmt.Errorf("--memory-budget %d is below the default sandbox memory %d: no sandbox could start", c.Capacity.MemoryBudget, c.DefaultLimits.MemoryBytes))
	}
	errs = append(errs, c.validateTLS()...)
	if c.BodyTimeout < time.Second {
		errs = append(errs, fmt.Errorf("--body-timeout %s: want at least 1s", c.BodyTimeout))
	}
	errs = append(errs, c.validatePreview()...)
	if _, err := c.connsPerSource(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.validateCluster()...)
	return errors.Join(errs...)
}

// networkConfig is the network manager's configuration from c's flags,
// but for the egress ports, which come from listening: Validate checks it
// (network.Config.Validate) before anything is made, and newNetwork uses
// it, so the two never disagree on what a flag means.
func (c *Config) networkConfig() (network.Config, error) {
	subnet, err := netip.ParsePrefix(c.Subnet)
	if err != nil {
		return network.Config{}, fmt.Errorf("--subnet %q: %w", c.Subnet, err)
	}
	dns := hostDNS()
	if len(c.DNS) > 0 {
		dns = nil
		for _, d := range c.DNS {
			a, err := netip.ParseAddr(d)
			if err != nil {
				return network.Config{}, fmt.Errorf("--dns %q: %w", d, err)
			}
			dns = append(dns, a)
		}
	}
	blocked, hostNets, err := blockedRanges(c.Blocked)
	if err != nil {
		return network.Config{}, err
	}
	return network.Config{
		NetnsDir: filepath.Join(c.RunDir, "netns"), Subnet: subnet, DNS: dns, Table: c.NetTable,
		InterfacePrefix: c.IfacePrefix, Blocked: blocked, OpenHostNetworks: !hostNets,
	}, nil
}

// checkListenAddr checks a TCP listen address as net.Listen reads it
// (host:port, the port a number up to 65535 or a service name), without
// listening: a daemon listens only once everything else is set up.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	_, err = net.LookupPort("tcp", port)
	return err
}

// connsPerSource is what one source may hold open on a public listener.
func (c *Config) connsPerSource() (httpserve.PerSource, error) {
	if c.MaxConnsPerSource < 0 {
		return httpserve.PerSource{}, fmt.Errorf("--max-conns-per-source %d: want 0 (no bound) or more", c.MaxConnsPerSource)
	}
	exempt := httpserve.Loopback
	if c.ConnsPerSourceExempt != nil {
		var err error
		if exempt, err = httpserve.ParseExempt(strings.Join(c.ConnsPerSourceExempt, ",")); err != nil {
			return httpserve.PerSource{}, fmt.Errorf("--conns-per-source-exempt %w", err)
		}
	}
	return httpserve.PerSource{Max: c.MaxConnsPerSource, Exempt: exempt}, nil
}

// hostDNS returns the IPv4 name servers of the host's resolv.conf that a
// sandbox can use: loopback ones (a local stub resolver) cannot be reached
// from a sandbox's namespace.
func hostDNS() []netip.Addr {
	f, err := os.Open("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil && a.Is4() && !a.IsLoopback() {
				out = append(out, a)
			}
		}
	}
	return out
}

// blockedRanges reads Config.Blocked into the network package's terms: the
// ranges to block, and whether the host's own networks are among them.
func blockedRanges(entries []string) (ranges []netip.Prefix, hostNets bool, err error) {
	if entries == nil {
		entries = []string{"private", "host"}
	}
	ranges = []netip.Prefix{}
	for _, e := range entries {
		switch e = strings.TrimSpace(e); e {
		case "private":
			ranges = append(ranges, network.DefaultBlocked...)
		case "host":
			hostNets = true
		default:
			p, perr := netip.ParsePrefix(e)
			if perr != nil {
				a, aerr := netip.ParseAddr(e)
				if aerr != nil {
					return nil, false, fmt.Errorf("--blocked-cidrs %q: want private, host, or an IPv4 CIDR", e)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			if !p.Addr().Is4() {
				return nil, false, fmt.Errorf("--blocked-cidrs %q: only IPv4 is supported", e)
			}
			ranges = append(ranges, p.Masked())
		}
	}
	return ranges, hostNets, nil
}

// prefixes reads addresses and CIDRs (IPv4 or IPv6) given to flag.
func prefixes(flag string, entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range entries {
		e = strings.TrimSpace(e)
		p, err := netip.ParsePrefix(e)
		if err != nil {
			a, aerr := netip.ParseAddr(e)
			if aerr != nil {
				return nil, fmt.Errorf("%s %q: want an IP address or CIDR", flag, e)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// hostAccessPrefixes reads --host-access-allow: IPv4 only, as
// allowHostCidrs are.
func hostAccessPrefixes(entries []string) ([]netip.Prefix, error) {
	ps, err := prefixes("--host-access-allow", entries)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("--host-access-allow %s: want an IPv4 address or CIDR", p)
		}
	}
	return ps, nil
}

// validLockName reports whether s can name a host-wide lock file (and a
// cgroup): 1-64 characters of letters, digits, '.', '_', '-', not a dot
// path.
func validLockName(s string) bool {
	if s == "" || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		ok := r == '.' || r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}

// instanceTypeRuntimes parses --instance-type-runtimes: TYPE=RUNTIME pairs
// of a known instance type and crun, runc or gvisor, each type at most once.
func instanceTypeRuntimes(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, pair := range pairs {
		typ, rt, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if _, known := sandbox.InstanceTypes[typ]; !ok || !known {
			return nil, fmt.Errorf("--instance-type-runtimes %q: want TYPE=RUNTIME, TYPE lite, standard or heavy", pair)
		}
		switch rt {
		case sandbox.RuntimeCrun, sandbox.RuntimeRunc, sandbox.RuntimeGVisor:
		default:
			return nil, fmt.Errorf("--instance-type-runtimes %q: runtime %q: want crun, runc or gvisor", pair, rt)
		}
		if _, dup := out[typ]; dup {
			return nil, fmt.Errorf("--instance-type-runtimes: %s is named twice", typ)
		}
		out[typ] = rt
	}
	return out, nil
}

// isExecutable reports whether path is a regular file someone may execute.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
