package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

func newNodeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "A cluster's nodes: ls, drain, uncordon (through its gateway)",
		Long: `A cluster (docs/cluster.md) runs sandboxd on many nodes behind a gateway.
These commands talk to the gateway; a single daemon answers NOT_FOUND.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newNodeListCommand(g), newNodeDrainCommand(g), newNodeUncordonCommand(g))
	return cmd
}

func newNodeListCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List the cluster's nodes with their state and load",
		Long: `List the nodes as a table: NAME, STATE (ready, cordoned or unavailable),
RUNNING (of --max-running, "-" for no limit), SANDBOXES, MEMORY (the running
sandboxes' limits of the memory budget) and HEARTBEAT (the Lease's last
renewal). With --json, print the API's answer, {"nodes": [...]}.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			nodes, err := c.Nodes(cmd.Context())
			if err != nil {
				return err
			}
			if nodes == nil {
				nodes = []api.Node{}
			}
			if asJSON {
				return printJSON(g.e.stdout, api.NodeList{Nodes: nodes})
			}
			sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
			now := g.e.now()
			t := newTable("NAME\tSTATE\tRUNNING\tSANDBOXES\tMEMORY\tHEARTBEAT\tLABELS")
			for _, n := range nodes {
				t.row("%s\t%s\t%d/%s\t%d\t%s/%s\t%s\t%s", n.Name, n.State, n.Running, quotaText(int64(n.MaxRunning), false),
					n.Total, bytesize.Format(n.MemoryUsedBytes), quotaText(n.MemoryBudgetBytes, true), ago(now, n.HeartbeatAt), nodeLabels(n.Labels))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newNodeDrainCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "drain [--json] NODE",
		Short: "Cordon a node and move its sandboxes, with their files, to other nodes",
		Long: `Cordon NODE (no new sandbox is placed on it), stop its running sandboxes, and
move every one of its sandboxes, with its files, to the least loaded other node
that fits; prints each sandbox moved and where, and each that failed and why
(those stay on NODE; run the drain again to try them again: it is idempotent).
Undo the cordon with "sandbox node uncordon NODE".`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.DrainNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, res)
			}
			fmt.Fprintf(g.e.stdout, "%s cordoned; %d sandboxes stopped, %d moved\n", res.Node.Name, len(res.Stopped), len(res.Moved))
			for _, mv := range res.Moved {
				fmt.Fprintf(g.e.stdout, "moved %s to %s\n", mv.ID, mv.Node)
			}
			ids := make([]string, 0, len(res.Failed))
			for id := range res.Failed {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			for _, id := range ids {
				fmt.Fprintf(g.e.stderr, "not moved %s: %s\n", id, res.Failed[id])
			}
			if len(ids) > 0 {
				return reportedError{}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newNodeUncordonCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "uncordon NODE",
		Short: "Let new sandboxes be placed on a node again",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			n, err := c.UncordonNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.e.stdout, "%s %s\n", n.Name, n.State)
			return err
		},
	}
	return cmd
}

// nodeLabels shows a node's labels as k=v,k=v in key order ("-": none).
func nodeLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}
