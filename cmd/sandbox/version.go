package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"
)

// serverVersionTimeout bounds the question to the daemon, so that version
// answers quickly when no daemon is running.
const serverVersionTimeout = 3 * time.Second

func newVersionCommand(g *globals) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the CLI's version and the daemon's",
		Long: `Print the CLI's version and, unless --client is given, the version and
runtime of the daemon it talks to. A daemon that cannot be reached is
reported on stderr; the exit code is still 0.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintf(g.e.stdout, "sandbox %s (%s, %s/%s)\n", cliVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if clientOnly {
				return nil
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), serverVersionTimeout)
			defer cancel()
			h, err := c.Health(ctx)
			if err != nil {
				if cmd.Context().Err() != nil {
					return cmd.Context().Err()
				}
				fmt.Fprintf(g.e.stderr, "sandboxd at %s: %s\n", c.URL(), message(err))
				return nil
			}
			fmt.Fprintf(g.e.stdout, "sandboxd %s (runtime %s) at %s\n", h.Version, h.Runtime, c.URL())
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print only the CLI's version")
	return cmd
}

// cliVersion is the version set at build time, else the module version go
// install recorded, else "dev".
func cliVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
