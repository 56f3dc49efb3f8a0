package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sandboxd/sandboxd/api"
)

// policyFlags are the egress policy flags of create and network set.
type policyFlags struct {
	allowDomains, denyDomains []string
	allow, deny               []string
	egressDefault             string
}

func (p *policyFlags) register(fl *pflag.FlagSet) {
	fl.StringArrayVar(&p.allowDomains, "allow-domain", nil, "with internet: allow this `DOMAIN` (a name, or *.name for every name below it; repeatable)")
	fl.StringArrayVar(&p.denyDomains, "deny-domain", nil, "with internet: deny this `DOMAIN` (wins over --allow-domain; repeatable)")
	fl.StringArrayVar(&p.allow, "allow", nil, "with internet: allow this `CIDR` or address, even an otherwise blocked one beyond the host (repeatable; never another sandbox)")
	fl.StringArrayVar(&p.deny, "deny", nil, "with internet: never reach this `CIDR` or address (wins over everything; repeatable)")
	fl.StringVar(&p.egressDefault, "egress-default", "", "with internet: allow or deny what no entry names (default: deny when --allow-domain or --allow is given, else allow)")
}

func (p *policyFlags) given() bool {
	return len(p.allowDomains)+len(p.denyDomains)+len(p.allow)+len(p.deny) > 0 || p.egressDefault != ""
}

// policy checks what can be checked here; the daemon checks the rest.
func (p *policyFlags) policy() (api.NetworkPolicy, error) {
	pol := api.NetworkPolicy{AllowDomains: p.allowDomains, DenyDomains: p.denyDomains, Default: p.egressDefault}
	switch p.egressDefault {
	case "", api.EgressAllow, api.EgressDeny:
	default:
		return pol, fmt.Errorf("--egress-default %q: want allow or deny", p.egressDefault)
	}
	for _, l := range []struct {
		flag string
		in   []string
		out  *[]string
	}{{"--allow", p.allow, &pol.AllowCIDRs}, {"--deny", p.deny, &pol.DenyCIDRs}} {
		for _, a := range l.in {
			c, err := parseCIDR(l.flag, a)
			if err != nil {
				return pol, err
			}
			*l.out = append(*l.out, c)
		}
	}
	return pol, nil
}

func newNetworkCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "network [--json] ID",
		Short: "Show a sandbox's egress policy and what it refused",
		Long: `Show the egress policy of the sandbox ID (allowed and denied domains and
CIDRs, the default) and a summary of what it refused: how many lookups,
connections and packets, and the last names denied. It does not create
the sandbox. See docs/network.md.`,
		Example: `  sandbox network agent-1
  sandbox network set agent-1 --allow-domain pypi.org --allow-domain '*.pythonhosted.org'
  sandbox network set agent-1 --egress-default allow --deny-domain example.com`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Sandbox(args[0]).Network(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, st)
			}
			return printNetwork(g.e.stdout, g.e.now(), st)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(newNetworkSetCommand(g))
	return cmd
}

func newNetworkSetCommand(g *globals) *cobra.Command {
	var (
		p      policyFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "set [flags] ID",
		Short: "Replace a sandbox's egress policy, at once if it runs",
		Long: `Replace the whole egress policy of the sandbox ID with the one the flags
describe (flags not given mean empty lists). A running sandbox gets it at
once: connections the new policy denies are cut. The sandbox's network mode
and --allow-host addresses do not change.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pol, err := p.policy()
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			st, err := c.Sandbox(args[0]).SetNetwork(cmd.Context(), pol)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, st)
			}
			return printNetwork(g.e.stdout, g.e.now(), st)
		},
	}
	p.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new policy as JSON")
	return cmd
}

// printNetwork writes st as aligned "Field: value" lines, then the last
// denied names.
func printNetwork(w io.Writer, now time.Time, st *api.NetworkStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	mode := string(st.Policy.Mode)
	if st.Address != "" {
		mode += " " + st.Address
	}
	line("Network", mode)
	line("Default", st.Policy.Default)
	line("Allowed domains", strings.Join(st.Policy.AllowDomains, ", "))
	line("Denied domains", strings.Join(st.Policy.DenyDomains, ", "))
	line("Allowed", strings.Join(st.Policy.AllowCIDRs, ", "))
	line("Denied", strings.Join(st.Policy.DenyCIDRs, ", "))
	line("Allowed host", strings.Join(st.AllowHostCIDRs, ", "))
	fmt.Fprintf(tw, "Refused:\t%d\n", st.Denied)
	for i, d := range st.LastDenied {
		k := ""
		if i == 0 {
			k = "Last denied:"
		}
		fmt.Fprintf(tw, "%s\t%s (%s, %s)\n", k, d.Name, d.Reason, ago(now, d.At))
	}
	return tw.Flush()
}
