package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

func newListCommand(g *globals) *cobra.Command {
	var (
		asJSON    bool
		labels    []string
		status    string
		limit     int
		pageToken string
	)
	cmd := &cobra.Command{
		Use:     "ls [--label K=V]... [--status S] [--limit N] [--json]",
		Aliases: []string{"list"},
		Short:   "List sandboxes",
		Long: `List your sandboxes (an admin key's: every tenant's, or with --tenant one
tenant's), ordered by ID, as a table: ID, STATUS, IMAGE, RUNTIME, CREATED,
LAST-USED and LABELS, and TENANT when more than one tenant shows. --label K=V (repeatable)
keeps sandboxes with all those labels, --status S those in status S. Without
--limit every page is fetched; with --limit N one page of N, and the token of
the next page is printed to stderr (continue with --page-token). With --json,
print the API's answer, {"sandboxes": [...], "nextPageToken": ...}.`,
		Example: `  sandbox ls --label team=ml --status running
  sandbox ls --limit 100 --json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			o := client.ListOptions{Status: api.SandboxStatus(status), Limit: limit, PageToken: pageToken}
			if len(labels) > 0 {
				if o.Labels, err = parseLabels(labels); err != nil {
					return &usageError{cmd: cmd.CommandPath(), err: err}
				}
			}
			var page api.SandboxList
			if limit > 0 {
				p, err := c.ListPage(cmd.Context(), o)
				if err != nil {
					return err
				}
				page = *p
			} else if page.Sandboxes, err = c.ListAll(cmd.Context(), o); err != nil {
				return err
			}
			if page.Sandboxes == nil {
				page.Sandboxes = []api.Sandbox{}
			}
			if asJSON {
				return printJSON(g.e.stdout, page)
			}
			if err := listTable(g, page.Sandboxes).write(g.e.stdout); err != nil {
				return err
			}
			if page.NextPageToken != "" {
				fmt.Fprintf(g.e.stderr, "more: --page-token %s\n", page.NextPageToken)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringArrayVarP(&labels, "label", "l", nil, "only sandboxes with label `K=V` (repeatable)")
	cmd.Flags().StringVar(&status, "status", "", "only sandboxes in status `S` (creating, running, sleeping, paused, stopped, failed)")
	cmd.Flags().IntVar(&limit, "limit", 0, "one page of at most `N` sandboxes (1-1000)")
	cmd.Flags().StringVar(&pageToken, "page-token", "", "continue after a previous page (with --limit)")
	return cmd
}

// listTable is the table of ls; TENANT shows when sandboxes of more than
// one tenant do.
func listTable(g *globals, list []api.Sandbox) *table {
	tenants := map[string]bool{}
	for _, sb := range list {
		tenants[sb.Tenant] = true
	}
	now := g.e.now()
	if len(tenants) <= 1 {
		t := newTable("ID\tSTATUS\tIMAGE\tRUNTIME\tCREATED\tLAST-USED\tLABELS")
		for _, sb := range list {
			t.row("%s\t%s\t%s\t%s\t%s\t%s\t%s", sb.ID, sb.Status, sb.Image, sb.Runtime,
				ago(now, sb.CreatedAt), ago(now, sb.LastUsedAt), formatLabels(sb.Labels))
		}
		return t
	}
	t := newTable("TENANT\tID\tSTATUS\tIMAGE\tRUNTIME\tCREATED\tLAST-USED\tLABELS")
	for _, sb := range list {
		t.row("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", sb.Tenant, sb.ID, sb.Status, sb.Image, sb.Runtime,
			ago(now, sb.CreatedAt), ago(now, sb.LastUsedAt), formatLabels(sb.Labels))
	}
	return t
}
