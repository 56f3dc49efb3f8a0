package main

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

type createFlags struct {
	image     string
	env       []string
	labels    []string
	selector  []string
	memory    string
	cpus      float64
	pids      int64
	network   string
	policy    policyFlags
	allowHost []string
	json      bool

	instanceType string
	runtime      string
	disk         string
	sleepAfter   time.Duration
	keepAlive    bool
	fromSnapshot string
	volumes      []string
}

func newCreateCommand(g *globals) *cobra.Command {
	var f createFlags
	cmd := &cobra.Command{
		Use:   "create [flags] ID",
		Short: "Create a sandbox with options (or show the one that exists)",
		Long: `Create the sandbox ID with the given options and start it. Any command
naming an unknown ID creates it with the daemon's defaults; create is for
when you want other options. Options apply only at creation: if ID exists
already, it is left as it is (a note on stderr says so).

Prints the ID, or with --json the sandbox's description.`,
		Example: `  sandbox create offline --network none --memory 256Mi --pids 128
  sandbox create ml --image base --cpus 2 --memory 4Gi --label team=ml
  sandbox create api-test --network internet --allow 10.0.0.5/32
  sandbox create agent --allow-domain pypi.org --allow-domain '*.pythonhosted.org'
  sandbox create untrusted --runtime gvisor
  sandbox create --from-snapshot deps-installed fork-1
  sandbox create --volume cache:/cache --volume datasets:/data:ro worker-1`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(cmd, g.e.getenv)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			return runCreate(cmd.Context(), g, f.json, args[0], opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.image, "image", "", `root filesystem image (default "host": the host's /usr, read-only)`)
	fl.StringArrayVarP(&f.env, "env", "e", nil, "environment variable for every command: `K=V`, or K to pass on the local value (repeatable)")
	fl.StringArrayVarP(&f.labels, "label", "l", nil, "label `K=V` (repeatable)")
	fl.StringArrayVar(&f.selector, "node-selector", nil, "on a cluster: place the sandbox on a node labelled `K=V` (repeatable: every one must match)")
	fl.StringVar(&f.memory, "memory", "", "memory limit, e.g. 512Mi or 2Gi")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit in cores, e.g. 1.5")
	fl.Int64Var(&f.pids, "pids", 0, "limit on processes and threads")
	fl.StringVar(&f.network, "network", "", "network mode: none (loopback only) or internet")
	f.policy.register(fl)
	fl.StringArrayVar(&f.allowHost, "allow-host", nil, "with internet: let the sandbox connect to this `CIDR` or address of the host itself (repeatable)")
	fl.BoolVar(&f.json, "json", false, "print the sandbox as JSON")
	fl.StringVar(&f.instanceType, "instance-type", "", "preset of limits: lite, standard or heavy (explicit limits override it)")
	fl.StringVar(&f.runtime, "runtime", "", "runtime: crun or runc (the host's kernel), or gvisor (gVisor's user-space kernel) (default: the daemon's)")
	fl.StringVar(&f.disk, "disk", "", "disk quota for the sandbox's writable layer, e.g. 2Gi (default: none)")
	fl.DurationVar(&f.sleepAfter, "sleep-after", 0, "idle time before the sandbox sleeps, e.g. 30m (default: the daemon's)")
	fl.BoolVar(&f.keepAlive, "keep-alive", false, "never put the sandbox to sleep")
	fl.StringArrayVar(&f.volumes, "volume", nil, "mount the named volume: `NAME:/PATH[:ro]` (repeatable; sandbox volume create)")
	fl.StringVar(&f.fromSnapshot, "from-snapshot", "", "start from this snapshot's files (and its image and runtime): sandbox snapshot ls")
	return cmd
}

// options turns the flags into sandbox options, checking what can be
// checked here; the daemon checks the rest (bounds that depend on the host).
func (f *createFlags) options(cmd *cobra.Command, getenv func(string) string) (api.SandboxOptions, error) {
	var o api.SandboxOptions
	o.Image = f.image
	if len(f.env) > 0 {
		env, err := parseEnv(f.env, getenv)
		if err != nil {
			return o, err
		}
		o.Env = env
	}
	if len(f.labels) > 0 {
		labels, err := parseLabels(f.labels)
		if err != nil {
			return o, err
		}
		o.Labels = labels
	}
	if len(f.selector) > 0 {
		o.NodeSelector = map[string]string{}
		for _, kv := range f.selector {
			if err := api.ParseNodeLabel(kv, o.NodeSelector); err != nil {
				return o, fmt.Errorf("--node-selector %w", err)
			}
		}
		if err := api.ValidateNodeLabels("--node-selector", o.NodeSelector); err != nil {
			return o, err
		}
	}
	var limits api.Limits
	if cmd.Flags().Changed("memory") {
		n, err := bytesize.Parse(f.memory)
		if err != nil || n == 0 {
			return o, fmt.Errorf("--memory %q: want a size such as 512Mi or 2Gi", f.memory)
		}
		limits.MemoryBytes = n
	}
	if cmd.Flags().Changed("cpus") {
		if !(f.cpus > 0) || f.cpus > math.MaxInt64/1000 {
			return o, fmt.Errorf("--cpus %v: want a number of cores above 0, e.g. 0.5 or 2", f.cpus)
		}
		limits.MilliCPU = max(1, int64(math.Round(f.cpus*1000)))
	}
	if cmd.Flags().Changed("pids") {
		if f.pids <= 0 {
			return o, fmt.Errorf("--pids %d: want a positive number", f.pids)
		}
		limits.Pids = f.pids
	}
	if cmd.Flags().Changed("disk") {
		n, err := bytesize.Parse(f.disk)
		if err != nil || n == 0 {
			return o, fmt.Errorf("--disk %q: want a size such as 2Gi", f.disk)
		}
		limits.DiskBytes = n
	}
	if limits != (api.Limits{}) {
		o.Limits = &limits
	}
	o.InstanceType = f.instanceType
	o.Runtime = f.runtime
	o.FromSnapshot = f.fromSnapshot
	for _, v := range f.volumes {
		vm, err := parseVolumeFlag(v)
		if err != nil {
			return o, err
		}
		o.Volumes = append(o.Volumes, vm)
	}
	if cmd.Flags().Changed("sleep-after") {
		if f.sleepAfter <= 0 {
			return o, fmt.Errorf("--sleep-after %s: want a positive duration", f.sleepAfter)
		}
		o.SleepAfter = f.sleepAfter.Milliseconds()
	}
	if cmd.Flags().Changed("keep-alive") {
		keep := f.keepAlive
		o.KeepAlive = &keep
	}
	if f.network != "" || f.policy.given() || len(f.allowHost) > 0 {
		n := &api.NetworkOptions{Mode: api.NetworkMode(f.network)}
		switch n.Mode {
		case "", api.NetworkNone, api.NetworkInternet:
		default:
			return o, fmt.Errorf("--network %q: want none or internet", f.network)
		}
		if n.Mode == api.NetworkNone && (f.policy.given() || len(f.allowHost) > 0) {
			return o, fmt.Errorf("--allow, --deny, --allow-domain, --deny-domain, --egress-default and --allow-host need --network internet")
		}
		pol, err := f.policy.policy()
		if err != nil {
			return o, err
		}
		n.AllowCIDRs, n.DenyCIDRs, n.AllowDomains, n.DenyDomains, n.Default = pol.AllowCIDRs, pol.DenyCIDRs, pol.AllowDomains, pol.DenyDomains, pol.Default
		for _, a := range f.allowHost {
			p, err := parseCIDR("--allow-host", a)
			if err != nil {
				return o, err
			}
			n.AllowHostCIDRs = append(n.AllowHostCIDRs, p)
		}
		o.Network = n
	}
	return o, nil
}

// parseCIDR reads an --allow or --allow-host value: a CIDR, or a single
// address taken as its host prefix (/32).
func parseCIDR(flag, s string) (string, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.String(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String(), nil
	}
	return "", fmt.Errorf("%s %q: want a CIDR such as 10.0.0.5/32 or an address", flag, s)
}

func runCreate(ctx context.Context, g *globals, asJSON bool, id string, opts api.SandboxOptions) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	sb, err := c.Sandbox(id, client.WithOptions(opts)).Ensure(ctx)
	if err != nil {
		return err
	}
	optionsGiven := opts.Image != "" || opts.Env != nil || opts.Labels != nil || opts.NodeSelector != nil || opts.Limits != nil || opts.Network != nil || opts.FromSnapshot != ""
	if !sb.Created && optionsGiven {
		fmt.Fprintf(g.e.stderr, "sandbox: %s exists already; its options were left as they are\n", sb.ID)
	}
	if asJSON {
		return printJSON(g.e.stdout, sb)
	}
	_, err = fmt.Fprintln(g.e.stdout, sb.ID)
	return err
}
