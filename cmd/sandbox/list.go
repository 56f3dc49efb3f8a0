package main

import (
	"bytes"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
)

func newListCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List sandboxes",
		Long: `List every sandbox of the daemon, ordered by ID, as a table:
ID, STATUS, IMAGE, CREATED, LAST-USED and LABELS. With --json, print the
API's answer, {"sandboxes": [...]}.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []api.Sandbox{}
				}
				return printJSON(g.e.stdout, api.SandboxList{Sandboxes: list})
			}
			now := g.e.now()
			var buf bytes.Buffer
			tw := tabwriter.NewWriter(&buf, 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tIMAGE\tCREATED\tLAST-USED\tLABELS")
			for _, sb := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sb.ID, sb.Status, sb.Image,
					ago(now, sb.CreatedAt), ago(now, sb.LastUsedAt), formatLabels(sb.Labels))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			// An empty last column leaves padding behind; drop it.
			for line := range strings.Lines(buf.String()) {
				if _, err := fmt.Fprintln(g.e.stdout, strings.TrimRight(line, " \n")); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
