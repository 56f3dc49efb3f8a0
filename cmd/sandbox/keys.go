package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

func newKeyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage API keys and their tenants: create, ls, rm, rotate (admin keys only)",
		Long: `An API key names a tenant: its sandboxes, IDs and previews are its own,
other tenants' sandboxes answer SANDBOX_NOT_FOUND, and quotas bound what it
holds. An admin key (--admin, like the daemon's token file) sees every tenant.
Keys are stored hashed: a key is printed once, when created or rotated.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newKeyCreateCommand(g), newKeyListCommand(g), newKeyRemoveCommand(g), newKeyRotateCommand(g))
	return cmd
}

func newKeyCreateCommand(g *globals) *cobra.Command {
	var (
		asJSON                   bool
		admin                    bool
		maxSandboxes, maxRunning int
		maxMemory                string
	)
	cmd := &cobra.Command{
		Use:   "create NAME [--max-sandboxes N] [--max-memory 64Gi] [--max-running N] [--admin] [--json]",
		Short: "Create an API key (a tenant) and print it once",
		Long: `Create the API key NAME and print it; the daemon keeps only its hash. NAME
is a DNS label of at most 32 bytes. Quotas (0: unlimited): --max-sandboxes (any
status), --max-running (at once), --max-memory (the sum of the memory limits of
running sandboxes). With --json: {"name": ..., "key": ..., "quotas": {...}}.`,
		Example: `  sandbox key create team-a --max-sandboxes 50 --max-running 10 --max-memory 64Gi`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.KeyCreateRequest{Name: args[0], Admin: admin,
				Quotas: api.Quotas{MaxSandboxes: maxSandboxes, MaxRunning: maxRunning}}
			if maxMemory != "" {
				n, err := bytesize.Parse(maxMemory)
				if err != nil {
					return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("--max-memory: %w", err)}
				}
				req.Quotas.MaxMemory = n
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			k, err := c.CreateKey(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, k)
			}
			_, err = fmt.Fprintln(g.e.stdout, k.Key)
			return err
		},
	}
	f := cmd.Flags()
	f.IntVar(&maxSandboxes, "max-sandboxes", 0, "most sandboxes the tenant has (0: unlimited)")
	f.IntVar(&maxRunning, "max-running", 0, "most sandboxes it runs at once (0: unlimited)")
	f.StringVar(&maxMemory, "max-memory", "", "most memory its running sandboxes' limits add up to, e.g. `64Gi`")
	f.BoolVar(&admin, "admin", false, "an admin key: the admin namespace, every tenant visible, no quotas")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newKeyListCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List API keys with their quotas and usage (never the keys)",
		Long: `List the API keys as a table: NAME, ADMIN, SANDBOXES, RUNNING and MEMORY
(usage/quota, "-" for unlimited) and CREATED. With --json, print the API's
answer, {"keys": [...]}.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			keys, err := c.ListKeys(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if keys == nil {
					keys = []api.Key{}
				}
				return printJSON(g.e.stdout, api.KeyList{Keys: keys})
			}
			now := g.e.now()
			t := newTable("NAME\tADMIN\tSANDBOXES\tRUNNING\tMEMORY\tCREATED")
			for _, k := range keys {
				if k.Admin {
					t.row("%s\tyes\t-\t-\t-\t%s", k.Name, ago(now, k.CreatedAt))
					continue
				}
				q, u := k.Quotas, k.Usage
				t.row("%s\tno\t%d/%s\t%d/%s\t%s/%s\t%s", k.Name, u.Sandboxes, quotaText(int64(q.MaxSandboxes), false),
					u.Running, quotaText(int64(q.MaxRunning), false), bytesize.Format(u.Memory), quotaText(q.MaxMemory, true),
					ago(now, k.CreatedAt))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func quotaText(n int64, size bool) string {
	switch {
	case n == 0:
		return "-"
	case size:
		return bytesize.Format(n)
	}
	return strconv.FormatInt(n, 10)
}

func newKeyRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete an API key; it stops working at once",
		Long: `Delete the API key NAME: calls with it fail (UNAUTHORIZED) from now on. The
tenant's sandboxes stay; an admin sees them (sandbox ls) and can remove them.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.RemoveKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.e.stdout, args[0])
			return err
		},
	}
}

func newKeyRotateCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate NAME [--json]",
		Short: "Give an API key a new secret and print it once; the old one stops working",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			k, err := c.RotateKey(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, k)
			}
			_, err = fmt.Fprintln(g.e.stdout, k.Key)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
