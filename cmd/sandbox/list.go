package main

import (
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
			t := newTable("ID\tSTATUS\tIMAGE\tRUNTIME\tCREATED\tLAST-USED\tLABELS")
			for _, sb := range list {
				t.row("%s\t%s\t%s\t%s\t%s\t%s\t%s", sb.ID, sb.Status, sb.Image, sb.Runtime,
					ago(now, sb.CreatedAt), ago(now, sb.LastUsedAt), formatLabels(sb.Labels))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
