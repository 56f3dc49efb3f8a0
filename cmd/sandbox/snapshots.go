package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/bytesize"
)

func newSnapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Snapshots of a sandbox's files, and sandboxes forked from them: create, ls, inspect, rm",
		Long: `A snapshot is a sandbox's files at one moment, frozen into an immutable layer
above its image's layers. Sandboxes created from it (sandbox create --from-snapshot
NAME ID) start with those files and share the layer: each writes only its own
changes. See docs/snapshots.md.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newSnapshotCreateCommand(g), newSnapshotListCommand(g), newSnapshotInspectCommand(g), newSnapshotRemoveCommand(g))
	return cmd
}

func newSnapshotCreateCommand(g *globals) *cobra.Command {
	var asJSON, memory, filesOnly bool
	cmd := &cobra.Command{
		Use:   "create ID NAME [--json]",
		Short: "Snapshot a sandbox's files under NAME",
		Long: `Snapshot the sandbox ID under NAME (1-63 characters of a-z, 0-9, '.', '_'
and '-'): its files, and on gVisor its memory and processes too (forks restore
them). The sandbox is frozen while its writable layer is copied (the answer says
how long) and runs on afterwards; a sleeping sandbox is started first. Prints
NAME, or with --json the snapshot's description.`,
		Example: `  sandbox snapshot create dev deps-installed
  sandbox create --from-snapshot deps-installed dev-2`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			snap, err := c.Sandbox(args[0]).Snapshot(cmd.Context(), args[1], client.SnapshotOptions{Memory: memory, FilesystemOnly: filesOnly})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, snap)
			}
			_, err = fmt.Fprintln(g.e.stdout, snap.Name)
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the snapshot as JSON")
	cmd.Flags().BoolVar(&memory, "memory", false, "require memory and processes (MEMORY_SNAPSHOT_UNSUPPORTED where the runtime cannot; gVisor keeps them by default)")
	cmd.Flags().BoolVar(&filesOnly, "filesystem-only", false, "keep the files alone, also on gVisor")
	return cmd
}

func newSnapshotListCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json]",
		Aliases: []string{"list"},
		Short:   "List snapshots",
		Long: `List snapshots as a table: NAME, SANDBOX (taken of), IMAGE, RUNTIME, SIZE (of
its files), FROZEN (how long the sandbox was frozen) and CREATED. With --json,
print the API's answer, {"snapshots": [...]}.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			snaps, err := c.ListSnapshots(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if snaps == nil {
					snaps = []api.Snapshot{}
				}
				return printJSON(g.e.stdout, api.SnapshotList{Snapshots: snaps})
			}
			now := g.e.now()
			t := newTable("NAME\tSANDBOX\tIMAGE\tRUNTIME\tSIZE\tFROZEN\tCREATED")
			for _, s := range snaps {
				t.row("%s\t%s\t%s\t%s\t%s\t%.0fms\t%s", s.Name, s.Sandbox, s.Image, s.Runtime, bytesize.Format(s.Size), s.FrozenMs, ago(now, s.CreatedAt))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSnapshotInspectCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME",
		Short: "Print a snapshot's description as JSON",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			snap, err := c.Snapshot(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(g.e.stdout, snap)
		},
	}
}

func newSnapshotRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove"},
		Short:   "Remove a snapshot (refused while a sandbox was created from it)",
		Long: `Remove the snapshot NAME. While a sandbox created from it exists, the
snapshot cannot be removed (SNAPSHOT_IN_USE): destroy those sandboxes first.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.RemoveSnapshot(cmd.Context(), args[0])
		},
	}
}
