package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

func newBackupCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Backups of a sandbox's directory, restored copy-on-write into any sandbox: create, restore, ls, rm",
		Long: `A backup is one directory of a sandbox packed into a read-only image, kept by
the daemon (or its S3 store) until its TTL passes. Restoring it mounts it
copy-on-write at a directory of the same or another sandbox in well under a
second, whatever its size. See docs/snapshots.md.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newBackupCreateCommand(g), newBackupRestoreCommand(g), newBackupListCommand(g), newBackupRemoveCommand(g))
	return cmd
}

func newBackupCreateCommand(g *globals) *cobra.Command {
	var asJSON bool
	var name string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create ID DIR [--name N] [--ttl 1h] [--json]",
		Short: "Back up the directory DIR of a sandbox",
		Long: `Back up the directory DIR (absolute) of the sandbox ID. Prints the backup's ID,
or with --json its handle {id, sandbox, dir, name, size, createdAt, expiresAt}.
The backup is collected when --ttl (default 72h) has passed.`,
		Example: `  sandbox backup create dev /workspace/app --name deps-installed --ttl 24h
  sandbox backup restore dev-2 bk-0123456789abcdef`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			b, err := c.Sandbox(args[0]).Backup(cmd.Context(), args[1], client.BackupOptions{Name: name, TTL: ttl})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, b)
			}
			_, err = fmt.Fprintln(g.e.stdout, b.ID)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the backup as JSON")
	cmd.Flags().StringVar(&name, "name", "", "a label for the backup")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the backup is kept (default 72h)")
	return cmd
}

func newBackupRestoreCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "restore ID BACKUP [DIR] [--json]",
		Short: "Mount a backup copy-on-write in a sandbox",
		Long: `Mount the backup BACKUP copy-on-write at DIR in the sandbox ID (the backup's own
directory by default), starting the sandbox if needed. Writes there are the
sandbox's own; the backup does not change. A restore at a directory that holds
one replaces it.`,
		Args: rangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			dir := ""
			if len(args) == 3 {
				dir = args[2]
			}
			r, err := c.Sandbox(args[0]).RestoreBackup(cmd.Context(), args[1], dir)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, r)
			}
			_, err = fmt.Fprintln(g.e.stdout, r.Dir)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the restore as JSON")
	return cmd
}

func newBackupListCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List backups",
		Long: `List backups as a table: ID, NAME, SANDBOX, DIR, SIZE, CREATED and EXPIRES.
With --json, print the API's answer, {"backups": [...]}.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.ListBackups(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []api.Backup{}
				}
				return printJSON(g.e.stdout, api.BackupList{Backups: list})
			}
			now := g.e.now()
			t := newTable("ID\tNAME\tSANDBOX\tDIR\tSIZE\tCREATED\tEXPIRES")
			for _, b := range list {
				t.row("%s\t%s\t%s\t%s\t%s\t%s\t%s", b.ID, b.Name, b.Sandbox, b.Dir, bytesize.Format(b.Size), ago(now, b.CreatedAt),
					b.ExpiresAt.Sub(now).Round(time.Minute))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newBackupRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm BACKUP",
		Aliases: []string{"remove"},
		Short:   "Remove a backup (sandboxes it was restored into keep their copy)",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.RemoveBackup(cmd.Context(), args[0])
		},
	}
}
