package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
)

func newRemoveCommand(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [-f] ID...",
		Aliases: []string{"remove", "destroy"},
		Short:   "Destroy sandboxes and everything in them",
		Long: `Destroy each sandbox named: its processes, its network, and its disk.
Prints each ID removed. An unknown ID is an error (SANDBOX_NOT_FOUND) unless
-f is given; the other IDs are still removed, each failure is reported as
"sandbox: ID: CODE: message", and sandbox exits 125.`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			failed := false
			for _, id := range args {
				err := c.Sandbox(id).Destroy(cmd.Context())
				switch {
				case err == nil:
					fmt.Fprintln(g.e.stdout, id)
				case force && errors.Is(err, client.ErrNotFound):
				case len(args) == 1:
					return err
				default:
					if ctxErr := cmd.Context().Err(); ctxErr != nil {
						return ctxErr
					}
					// Several IDs: say which one failed.
					fmt.Fprintf(g.e.stderr, "sandbox: %s: %s\n", id, message(err))
					failed = true
				}
			}
			if failed {
				return reportedError{}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "ignore sandboxes that do not exist")
	return cmd
}
