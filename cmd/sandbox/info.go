package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

func newInfoCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "info [--json] ID",
		Aliases: []string{"inspect"},
		Short:   "Show one sandbox",
		Long: `Show the sandbox ID: status, image, runtime, limits, network, labels and
times. It does not create the sandbox: an unknown ID is SANDBOX_NOT_FOUND.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			sb, err := c.Sandbox(args[0]).Info(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, sb)
			}
			return printInfo(g.e.stdout, g.e.now(), sb)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printInfo writes sb as aligned "Field: value" lines.
func printInfo(w io.Writer, now time.Time, sb *api.Sandbox) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	when := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		s := t.In(now.Location()).Format("2006-01-02 15:04:05 MST")
		if rel := ago(now, t); strings.HasSuffix(rel, " ago") || rel == "just now" {
			s += " (" + rel + ")"
		}
		return s
	}
	line("ID", sb.ID)
	line("Tenant", sb.Tenant)
	line("Node", sb.Node)
	status := string(sb.Status)
	if !sb.StatusChangedAt.IsZero() {
		status += " since " + when(sb.StatusChangedAt)
	}
	line("Status", status)
	line("Reason", sb.StatusReason)
	switch {
	case sb.KeepAlive:
		line("Sleeps", "never (keep-alive)")
	case sb.IdleDeadline != nil:
		line("Sleeps", fmt.Sprintf("at %s if idle (after %s)", sb.IdleDeadline.In(now.Location()).Format("15:04:05 MST"), time.Duration(sb.SleepAfter)*time.Millisecond))
	case sb.SleepAfter > 0:
		line("Sleeps", fmt.Sprintf("after %s idle", time.Duration(sb.SleepAfter)*time.Millisecond))
	}
	line("Instance type", sb.InstanceType)
	line("Image", sb.Image)
	line("Runtime", sb.Runtime)
	if sb.Isolation.UserNamespace {
		line("User namespace", fmt.Sprintf("root is host UID %d (%d-%d)", sb.Isolation.HostUIDBase, sb.Isolation.HostUIDBase, uint64(sb.Isolation.HostUIDBase)+65535))
	} else if sb.Isolation.Runtime != "" && sb.Isolation.Runtime != "gvisor" {
		line("User namespace", "none: root is the host's root")
	}
	line("Created", when(sb.CreatedAt))
	line("Last used", when(sb.LastUsedAt))
	if sb.Limits.MemoryBytes > 0 {
		line("Memory", bytesize.Format(sb.Limits.MemoryBytes))
	}
	if sb.Limits.MilliCPU > 0 {
		line("CPUs", strconv.FormatFloat(float64(sb.Limits.MilliCPU)/1000, 'f', -1, 64))
	}
	if sb.Limits.Pids > 0 {
		line("Pids", strconv.FormatInt(sb.Limits.Pids, 10))
	}
	if sb.Limits.DiskBytes > 0 {
		line("Disk", bytesize.Format(sb.Limits.DiskBytes))
	}
	network := string(sb.Network.Mode)
	if sb.Network.Address != "" {
		network += " " + sb.Network.Address
		if sb.Network.Gateway != "" {
			network += " (gateway " + sb.Network.Gateway + ")"
		}
	}
	line("Network", network)
	line("Egress default", sb.Network.Default)
	line("Allowed domains", strings.Join(sb.Network.AllowDomains, ", "))
	line("Denied domains", strings.Join(sb.Network.DenyDomains, ", "))
	line("Allowed", strings.Join(sb.Network.AllowCIDRs, ", "))
	line("Denied", strings.Join(sb.Network.DenyCIDRs, ", "))
	line("Allowed host", strings.Join(sb.Network.AllowHostCIDRs, ", "))
	line("Labels", formatLabels(sb.Labels))
	return tw.Flush()
}
