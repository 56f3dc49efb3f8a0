package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// newLifecycleCommand makes stop, start, restart, renew, pause and resume:
// each takes one or more IDs, never creates a sandbox, and prints the new
// status.
func newLifecycleCommand(g *globals, verb, short string) *cobra.Command {
	var asJSON bool
	var pause client.PauseOptions
	cmd := &cobra.Command{
		Use:   verb + " [--json] ID...",
		Short: short,
		Args:  minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			for _, id := range args {
				sb, err := lifecycleAction(cmd.Context(), c.Sandbox(id), verb, pause)
				if err != nil {
					return err
				}
				if asJSON {
					if err := printJSON(g.e.stdout, sb); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(g.e.stdout, "%s\t%s\n", sb.ID, sb.Status)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each sandbox as JSON")
	if verb == "pause" {
		cmd.Use = "pause [--filesystem-only] [--json] ID..."
		cmd.Long = `Pause a sandbox. Keeping its memory and processes needs a runtime that can
checkpoint them; where none can (crun and runc on this kernel; gVisor for now) the
answer is MEMORY_SNAPSHOT_UNSUPPORTED. With --filesystem-only the sandbox is paused
without memory, exactly as stop: its files stay, resume (or any call) starts it.`
		cmd.Flags().BoolVar(&pause.FilesystemOnly, "filesystem-only", false, "pause without memory: stop the container, keep the files")
	}
	return cmd
}

func lifecycleAction(ctx context.Context, sb *client.Sandbox, verb string, pause client.PauseOptions) (*api.Sandbox, error) {
	switch verb {
	case "pause":
		return sb.Pause(ctx, pause)
	case "resume":
		return sb.Resume(ctx)
	case "stop":
		return sb.Stop(ctx)
	case "start":
		return sb.Start(ctx)
	case "restart":
		return sb.Restart(ctx)
	default:
		return sb.Renew(ctx)
	}
}

func newUpdateCommand(g *globals) *cobra.Command {
	var sleepAfter time.Duration
	var keepAlive bool
	cmd := &cobra.Command{
		Use:   "update [--sleep-after DUR] [--keep-alive=true|false] ID",
		Short: "Change a sandbox's idle time before sleep, or keep it alive",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var sa *time.Duration
			var ka *bool
			if cmd.Flags().Changed("sleep-after") {
				sa = &sleepAfter
			}
			if cmd.Flags().Changed("keep-alive") {
				ka = &keepAlive
			}
			if sa == nil && ka == nil {
				return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("nothing to change: give --sleep-after or --keep-alive")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			sb, err := c.Sandbox(args[0]).Update(cmd.Context(), sa, ka)
			if err != nil {
				return err
			}
			return printInfo(g.e.stdout, g.e.now(), sb)
		},
	}
	cmd.Flags().DurationVar(&sleepAfter, "sleep-after", 0, "idle time before the sandbox sleeps, e.g. 30m")
	cmd.Flags().BoolVar(&keepAlive, "keep-alive", false, "never put the sandbox to sleep")
	return cmd
}

func newEventsCommand(g *globals) *cobra.Command {
	var sandbox string
	cmd := &cobra.Command{
		Use:   "events [--sandbox ID]",
		Short: "Follow lifecycle events (created, started, slept, woke, stopped, destroyed, failed)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			es, err := c.Events(cmd.Context(), sandbox)
			if err != nil {
				return err
			}
			for ev, err := range es.All() {
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return err
				}
				fmt.Fprintf(g.e.stdout, "%s\t%-9s\t%s\t%s\t%s\n", ev.Timestamp.In(g.e.now().Location()).Format(time.RFC3339), ev.Type, ev.SandboxID, ev.Status, ev.Reason)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&sandbox, "sandbox", "", "only this sandbox's events")
	return cmd
}
