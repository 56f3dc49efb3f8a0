// Command sandboxd is the sandbox daemon: it runs isolated Linux sandboxes
// addressed by caller-chosen IDs and serves the HTTP API that drives them.
//
//	sandboxd [serve] [--listen 127.0.0.1:7070] [--state-dir /var/lib/sandboxd] [--runtime auto|crun|runc]
//	sandboxd doctor [--json] [the same flags]   checks the host (exit 1 when something required is missing)
//	sandboxd gateway --kubeconfig FILE --listen ADDR   a cluster's gateway (docs/cluster.md)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	goruntime "runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/bytesize"
	"github.com/sandboxd/sandboxd/internal/daemon"
	"github.com/sandboxd/sandboxd/internal/httpapi"
	"github.com/sandboxd/sandboxd/internal/httpserve"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/requestid"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	args := os.Args[1:]
	command := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "serve", "doctor":
			command, args = args[0], args[1:]
		case "gateway":
			os.Exit(gatewayMain(args[1:]))
		case "version", "--version":
			fmt.Println("sandboxd", version)
			return
		}
	}
	o, err := parseFlags(command, args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandboxd:", err)
		os.Exit(2)
	}
	log := newLogger(o)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if command == "doctor" {
		os.Exit(runDoctor(ctx, o))
	}
	// The banner is for a person reading a terminal; JSON logs go to tools.
	o.cfg.Banner = o.logFormat == "text"
	if err := daemon.Run(ctx, o.cfg, log); err != nil {
		log.Error("sandboxd stopped", "err", err)
		os.Exit(1)
	}
}

// options are the command line's (and config file's) settings.
type options struct {
	cfg   daemon.Config
	level slog.Level
	// logFormat is text or json.
	logFormat string
	// json: doctor prints its report as JSON.
	json bool
	// flags are the flags parsed (a config file's keys).
	flags *flag.FlagSet
	// configErr is what validating the configuration found (doctor only).
	configErr error
}

func parseFlags(command string, args []string) (options, error) {
	fs := flag.NewFlagSet("sandboxd "+command, flag.ContinueOnError)
	o := options{cfg: daemon.Config{Version: version}, flags: fs}
	cfg := &o.cfg
	var dns, dnsUpstream, blocked, connsExempt, bucketAllow, hostAccessAllow, typeRuntimes, logLevel string
	var defMem, maxMem, budget, reserve, maxDisk, maxImage, previewHeaderBytes string
	var defCPU, maxCPU float64
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:7070", "address of the HTTP API")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/sandboxd", "registry, token and sandbox disks")
	fs.StringVar(&cfg.RunDir, "run-dir", "/run/sandboxd", "runtime state that does not outlive a reboot")
	fs.StringVar(&cfg.Runtime, "runtime", "auto", "OCI runtime of containers on the host's kernel: auto (crun, else runc), crun or runc")
	fs.StringVar(&cfg.DefaultRuntime, "default-runtime", "", "runtime of sandboxes that do not choose: crun, runc or gvisor (default: the one --runtime picks)")
	fs.StringVar(&cfg.RunscPath, "runsc", "", "gVisor's runsc binary (default: next to sandboxd, else on $PATH)")
	fs.StringVar(&typeRuntimes, "instance-type-runtimes", "", "comma-separated TYPE=RUNTIME pairs (lite=gvisor): a sandbox of that instance type that names no runtime runs on that runtime (crun, runc or gvisor)")
	fs.StringVar(&cfg.GVisorPlatform, "gvisor-platform", "auto", "gVisor platform: auto (systrap), systrap, ptrace or kvm")
	fs.StringVar(&cfg.AgentPath, "agent", "", "the static sandbox-agent binary (default: next to sandboxd)")
	fs.StringVar(&cfg.DefaultNetwork, "default-network", sandbox.NetworkInternet, "network mode of sandboxes that do not choose: none or internet")
	fs.StringVar(&cfg.Subnet, "subnet", "10.203.0.0/16", "IPv4 pool for internet-mode sandboxes")
	fs.StringVar(&dns, "dns", "", "comma-separated name servers for sandboxes (default: the host's non-loopback ones)")
	fs.StringVar(&dnsUpstream, "dns-upstream", "", "comma-separated servers (IPv4[:port]) the daemon's DNS forwarder asks for sandboxes; every sandbox's DNS goes through it, by its egress policy (default: the --dns servers on port 53)")
	fs.StringVar(&blocked, "blocked-cidrs", "private,host", "comma-separated destinations no sandbox reaches unless its allowCidrs name them: private (10/8, 172.16/12, 192.168/16, 100.64/10, 169.254/16, 127/8, 0/8, 224/4, 240/4), host (the host's own subnets and gateways, found at start) and IPv4 CIDRs; the sandbox subnet is always blocked")
	fs.StringVar(&bucketAllow, "bucket-endpoint-allow", "", "comma-separated IP addresses and CIDRs a tenant's bucket mount may name although they are out of tenants' reach (loopback, link-local, the host's own addresses, the sandbox subnet); the admin's mounts may name any endpoint")
	fs.StringVar(&hostAccessAllow, "host-access-allow", "", "comma-separated IPv4 addresses and CIDRs of the host a tenant's sandbox may name in network.allowHostCidrs (every port at them opens to it); without it tenants' allowHostCidrs are refused (HOST_ACCESS_FORBIDDEN); the admin's sandboxes may name any")
	fs.StringVar(&cfg.CgroupParent, "cgroup-parent", "sandboxd", "cgroup that holds the sandboxes' cgroups (unique per daemon on a host)")
	fs.StringVar(&cfg.NetTable, "nft-table", "sandboxd", "nftables table owned by the daemon")
	fs.StringVar(&cfg.IfacePrefix, "iface-prefix", "sbx", "prefix of sandboxes' host interface names (1-3 letters; unique per daemon on a host)")
	fs.StringVar(&defMem, "default-memory", "1Gi", "memory limit of sandboxes that do not choose")
	fs.StringVar(&maxMem, "max-memory", "", "largest memory limit a sandbox may ask for (default: host memory)")
	fs.Float64Var(&defCPU, "default-cpus", 1, "CPU limit, in cores, of sandboxes that do not choose")
	fs.Float64Var(&maxCPU, "max-cpus", float64(goruntime.NumCPU()), "largest CPU limit a sandbox may ask for")
	fs.Int64Var(&cfg.DefaultLimits.Pids, "default-pids", 1024, "task limit of sandboxes that do not choose")
	fs.Int64Var(&cfg.MaxLimits.Pids, "max-pids", 32768, "largest task limit a sandbox may ask for")
	fs.DurationVar(&cfg.SleepAfter, "sleep-after", 10*time.Minute, "idle time after which a sandbox sleeps, unless it chooses its own")
	fs.DurationVar(&cfg.MaxSleepAfter, "max-sleep-after", 24*time.Hour, "longest idle time a sandbox may choose")
	fs.DurationVar(&cfg.IdleCheck, "idle-check", time.Second, "how often idle sandboxes are looked for")
	fs.BoolVar(&cfg.UserNS, "userns", true, "run each new crun sandbox in a user namespace of its own, its root an unprivileged host UID (off when the kernel cannot; the start-up log says so)")
	fs.UintVar(&cfg.UserNSBase, "userns-base", sandbox.DefaultUserNSBase, "first host UID of the sandboxes' UID ranges (65536 IDs each)")
	fs.IntVar(&cfg.WarmPool, "warm-pool", 2, "sandboxes with the default options kept started ahead, so that creating one takes milliseconds (0: none)")
	fs.IntVar(&cfg.Capacity.MaxRunning, "max-running", 0, "most sandboxes running at once (0: no limit but memory)")
	fs.IntVar(&cfg.Capacity.MaxTotal, "max-sandboxes", 10000, "most sandboxes that may exist (0: no limit)")
	fs.StringVar(&budget, "memory-budget", "0", "bound on the sum of running sandboxes' memory limits (0: none; admission is by real use, --memory-reserve)")
	fs.StringVar(&reserve, "memory-reserve", "", "memory kept available to the host: below it no sandbox starts and idle ones are put to sleep, least recently used first (default: 5% of host memory, at least 256Mi; 0: not checked)")
	fs.Float64Var(&cfg.Capacity.MemoryPressure, "memory-pressure", 20, "memory pressure (PSI some avg10, percent) above which the host counts as short of memory like under --memory-reserve (0: not checked)")
	fs.StringVar(&maxDisk, "max-disk", "1Ti", "largest disk quota a sandbox may ask for")
	fs.StringVar(&cfg.DefaultImage, "default-image", "host", "image of sandboxes that do not choose: host, base or any stored image")
	fs.StringVar(&cfg.RegistryAuth, "registry-auth", "", "docker config file with registry credentials for image pulls (default $DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	fs.StringVar(&maxImage, "max-image-size", "32Gi", "largest image (unpacked) or image upload accepted")
	var maxBackup string
	fs.StringVar(&maxBackup, "max-backup-size", "4Gi", "largest directory (its tar stream) a backup takes, at most 4Gi")
	fs.StringVar(&cfg.BackupStore, "backup-store", "", "where backups live: empty for the state directory, or s3://BUCKET[/PREFIX]")
	fs.StringVar(&cfg.BackupStoreEndpoint, "backup-store-endpoint", "", "the S3 endpoint URL of an s3:// --backup-store")
	fs.StringVar(&cfg.BackupStoreRegion, "backup-store-region", "", "the S3 region of an s3:// --backup-store (default us-east-1)")
	fs.StringVar(&cfg.BackupStoreSecret, "backup-store-secret", "", "the daemon's secret (sandbox secret set) with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an s3:// --backup-store")
	fs.StringVar(&cfg.ImageCacheDir, "image-cache-dir", "/var/cache/sandboxd", "cache of base image builds, shared by state directories (empty: none)")
	fs.StringVar(&cfg.PreviewDomain, "preview-domain", "localhost", "preview URLs are {port}-{sandbox}-{token}.DOMAIN (browsers send *.localhost to loopback)")
	fs.StringVar(&cfg.PreviewScheme, "preview-scheme", "", "scheme of preview URLs: http or https (default: https with --tls-cert, else http; https behind a TLS proxy)")
	fs.StringVar(&cfg.PreviewListen, "preview-listen", "", "extra address that serves only preview traffic (default: previews come in on --listen)")
	fs.IntVar(&cfg.PreviewPort, "preview-port", 0, "port in preview URLs (default: the preview listener's; 80 or 443 leave it out)")
	fs.DurationVar(&cfg.BodyTimeout, "body-timeout", httpapi.DefaultBodyTimeout, "longest a client may take to send a JSON request body (streamed uploads are not bounded)")
	fs.StringVar(&previewHeaderBytes, "preview-max-header-bytes", "64Ki", "largest response headers a service in a sandbox may send through the preview proxy (4Ki to 16Mi)")
	fs.DurationVar(&cfg.PreviewLimits.HeaderTimeout, "preview-header-timeout", proxy.DefaultHeaderTimeout, "longest a service in a sandbox may take to send its response headers through the preview proxy")
	fs.IntVar(&cfg.PreviewLimits.MaxInFlightPerSandbox, "preview-max-inflight-per-sandbox", proxy.DefaultMaxInFlightPerSandbox, "most proxied requests (preview URLs, port proxy, WebSockets) in flight to one sandbox; more get 503 PREVIEW_BUSY")
	fs.IntVar(&cfg.PreviewLimits.MaxInFlight, "preview-max-inflight", proxy.DefaultMaxInFlight, "most proxied requests in flight in all; more get 503 PREVIEW_BUSY")
	fs.BoolVar(&cfg.PreviewJoin, "preview-join", false, "join a public preview's client connection to the service's in the kernel after its first request: later requests that need nothing of the daemon pass in the kernel, the others are checked per request (docs/security.md#joined-preview-connections---preview-join); off by default: the kernel can deliver a retransmitted segment twice on a joined socket (docs/api-ports.md)")
	fs.IntVar(&cfg.MaxConnsPerSource, "max-conns-per-source", httpserve.DefaultMaxPerSource, "most connections one source address (IPv6: its /64) keeps open on each listener; past it a new one is closed at once (0: no bound but the listener's; default 0 on a cluster node, whose callers are the gateways)")
	fs.StringVar(&connsExempt, "conns-per-source-exempt", "loopback", "comma-separated addresses and CIDRs (and loopback) whose connections --max-conns-per-source does not count: a reverse proxy in front, which forwards many users' calls from one address (empty: none)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate (chain) for the API and preview listeners; with --tls-key they serve HTTPS (reloaded on SIGHUP)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&cfg.Cluster.Kubeconfig, "cluster-kubeconfig", "", "kubeconfig of the Kubernetes API of the cluster this daemon is a node of (with --node-name; without it, a node in a pod uses the pod's service account)")
	fs.StringVar(&cfg.Cluster.NodeName, "node-name", "", "this node's name in the cluster (a DNS label); makes the daemon a cluster node (docs/cluster.md)")
	fs.Func("node-label", "a label of this node, KEY=VALUE (repeatable): a create's nodeSelector places sandboxes on nodes with its labels", func(kv string) error {
		if cfg.Cluster.Labels == nil {
			cfg.Cluster.Labels = map[string]string{}
		}
		return api.ParseNodeLabel(kv, cfg.Cluster.Labels)
	})
	fs.StringVar(&cfg.Cluster.NodeURL, "node-url", "", "URL at which the cluster's gateway reaches this node's API (default: the --listen address, when it names a host)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text (key=value) or json (one JSON object per line)")
	configFile := fs.String("config", defaultConfigFile, "YAML config file whose keys are these flags' names; flags given here override it (empty: none)")
	if command == "doctor" {
		fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	}
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *configFile != "" {
		if err := applyConfigFile(fs, *configFile, isSet(fs, "config")); err != nil {
			if command != "doctor" {
				return o, err
			}
			o.configErr = err
		}
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return o, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	if err := o.level.UnmarshalText([]byte(logLevel)); err != nil {
		return o, fmt.Errorf("--log-level: %w", err)
	}
	var err error
	if cfg.DefaultLimits.MemoryBytes, err = bytesize.Parse(defMem); err != nil {
		return o, fmt.Errorf("--default-memory: %w", err)
	}
	if maxMem == "" {
		cfg.MaxLimits.MemoryBytes = hostMemory()
	} else if cfg.MaxLimits.MemoryBytes, err = bytesize.Parse(maxMem); err != nil {
		return o, fmt.Errorf("--max-memory: %w", err)
	}
	if cfg.Capacity.MemoryBudget, err = bytesize.Parse(budget); err != nil {
		return o, fmt.Errorf("--memory-budget: %w", err)
	}
	if reserve == "" {
		cfg.Capacity.MemoryReserve = max(hostMemory()/20, 256<<20)
	} else if cfg.Capacity.MemoryReserve, err = bytesize.Parse(reserve); err != nil {
		return o, fmt.Errorf("--memory-reserve: %w", err)
	}
	if p := cfg.Capacity.MemoryPressure; p < 0 || p > 100 {
		return o, fmt.Errorf("--memory-pressure %g: want a percentage from 0 to 100", p)
	}
	if cfg.MaxLimits.DiskBytes, err = bytesize.Parse(maxDisk); err != nil {
		return o, fmt.Errorf("--max-disk: %w", err)
	}
	if cfg.MaxBackupBytes, err = bytesize.Parse(maxBackup); err != nil || cfg.MaxBackupBytes <= 0 {
		return o, fmt.Errorf("--max-backup-size %q: want a size such as 4Gi", maxBackup)
	}
	if cfg.MaxImageBytes, err = bytesize.Parse(maxImage); err != nil || cfg.MaxImageBytes <= 0 {
		return o, fmt.Errorf("--max-image-size %q: want a size such as 32Gi", maxImage)
	}
	if cfg.PreviewLimits.MaxHeaderBytes, err = bytesize.Parse(previewHeaderBytes); err != nil {
		return o, fmt.Errorf("--preview-max-header-bytes: %w", err)
	}
	cfg.DefaultLimits.MilliCPU = int64(defCPU * 1000)
	cfg.MaxLimits.MilliCPU = int64(maxCPU * 1000)
	if dns != "" {
		cfg.DNS = strings.Split(dns, ",")
	}
	if dnsUpstream != "" {
		cfg.DNSUpstream = strings.Split(dnsUpstream, ",")
	}
	cfg.Blocked = []string{}
	if blocked != "" {
		cfg.Blocked = strings.Split(blocked, ",")
	}
	if bucketAllow != "" {
		cfg.BucketEndpointAllow = strings.Split(bucketAllow, ",")
	}
	if hostAccessAllow != "" {
		cfg.HostAccessAllow = strings.Split(hostAccessAllow, ",")
	}
	cfg.ConnsPerSourceExempt = []string{}
	if connsExempt != "" {
		cfg.ConnsPerSourceExempt = strings.Split(connsExempt, ",")
	}
	if cfg.Cluster.NodeName != "" && !isSet(fs, "max-conns-per-source") {
		// A node's callers are the cluster's gateways, each forwarding
		// many users' calls from one address; the gateway bounds sources.
		cfg.MaxConnsPerSource = 0
	}
	if typeRuntimes != "" {
		cfg.InstanceTypeRuntimes = strings.Split(typeRuntimes, ",")
	}
	if command == "doctor" {
		// The doctor reports a bad configuration as one of its findings.
		o.configErr = errors.Join(o.configErr, cfg.Validate())
		return o, nil
	}
	return o, cfg.Validate()
}

// isSet says whether the flag name was given, on the command line or in
// the config file.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// newLogger builds the one logger of the process, in the chosen format.
func newLogger(o options) *slog.Logger {
	opts := &slog.HandlerOptions{Level: o.level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	// Lines logged with a request's context carry its X-Request-Id.
	return slog.New(requestid.Handler(h))
}

func hostMemory() int64 {
	var info syscall.Sysinfo_t
	if err := syscall.Sysinfo(&info); err != nil {
		return 1 << 30
	}
	return int64(info.Totalram) * int64(info.Unit)
}
