package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client/mcpserver"
)

func newMCPCommand(g *globals) *cobra.Command {
	var outputBytes int
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve sandboxd's tools to an AI agent over MCP (stdio)",
		Long: `Serve the Model Context Protocol on stdin and stdout, so that an MCP-capable
agent can start this command and use sandboxd's tools: create_sandbox,
list_sandboxes, destroy_sandbox, exec, write_file, read_file, list_files,
run_code, start_process, process_logs, kill_process and expose_port (see
docs/mcp.md). The tools act on the daemon --url and --token name, like every
other command. Nothing but protocol messages is written to stdout.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ms := mcpserver.New(c, mcpserver.Options{Version: cliVersion(), OutputBytes: outputBytes})
			return mcpserver.ServeIO(cmd.Context(), ms, io.NopCloser(g.e.stdin), nopWriteCloser{g.e.stdout})
		},
	}
	cmd.Flags().IntVar(&outputBytes, "output-bytes", mcpserver.DefaultOutputBytes,
		"how much of each output stream a result carries (the rest is cut in the middle and written to a file in the sandbox)")
	return cmd
}

// nopWriteCloser lets the MCP transport "close" stdout without closing it.
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
