package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/client"
)

// env is what the CLI takes from its process: standard streams,
// environment variables and the clock. Tests substitute all of them.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	now    func() time.Time
}

// globals holds the flags every command shares and builds the client.
type globals struct {
	e      *env
	root   *cobra.Command
	url    string
	token  string
	tenant string
}

// run executes the command line args. Its error decides the exit code (see
// exitCode).
func run(ctx context.Context, e *env, args []string) error {
	root := newRootCommand(e)
	rest, err := parseLeadingGlobals(root, args)
	if err != nil {
		return &usageError{cmd: root.CommandPath(), err: err}
	}
	root.SetArgs(rest)
	return root.ExecuteContext(ctx)
}

// parseLeadingGlobals sets the global flags given before the command's
// name (--url, --token, --tenant) on the root and returns the rest of
// args. Cobra parses all of a command line's flags with the command's own
// flag set, in which a flag of the command shadows a global one of the
// same name: `sandbox --token API expose demo 8080` gave the API token to
// expose's --token, the preview URL's token. Before the command's name a
// flag can only be global, so there it always is; after it the command's
// own flag wins, as before.
func parseLeadingGlobals(root *cobra.Command, args []string) ([]string, error) {
	pf := root.PersistentFlags()
	i := 0
	for i < len(args) {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(args[i], "--"), "=")
		f := pf.Lookup(name)
		if !strings.HasPrefix(args[i], "--") || f == nil {
			break
		}
		switch {
		case hasValue:
		case f.NoOptDefVal != "":
			value = f.NoOptDefVal
		case i+1 < len(args):
			i++
			value = args[i]
		default:
			return args[i:], nil // cobra reports the missing value
		}
		if err := pf.Set(name, value); err != nil {
			return nil, fmt.Errorf("invalid argument %q for --%s: %w", value, name, err)
		}
		i++
	}
	return args[i:], nil
}

func newRootCommand(e *env) *cobra.Command {
	g := &globals{e: e}
	root := &cobra.Command{
		Use:   "sandbox",
		Short: "Run code in isolated sandboxes on a sandboxd daemon",
		Long: `sandbox talks to a sandboxd daemon. A sandbox is named by an ID you choose
(a DNS label: 1-63 of a-z, 0-9 and '-'); the first command that names an ID
creates the sandbox, later ones reuse it.

The daemon is found with --url, else $SANDBOX_URL, else ` + client.DefaultURL + `.
The token comes from --token, else $SANDBOX_TOKEN, else (for a daemon on this
machine) the daemon's token file, $SANDBOXD_STATE_DIR/token or
` + defaultStateDir + `/token.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	g.root = root
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), err: err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.url, "url", "", "daemon URL (default $"+client.EnvURL+" or "+client.DefaultURL+")")
	pf.StringVar(&g.token, "token", "", "API token (default $"+client.EnvToken+", else the local daemon's token file)")
	pf.StringVar(&g.tenant, "tenant", "", "act in tenant `NAME`'s namespace (admin keys only; \"default\" is the admin namespace)")
	root.AddCommand(
		newExecCommand(g),
		newCreateCommand(g),
		newListCommand(g),
		newInfoCommand(g),
		newNetworkCommand(g),
		newRemoveCommand(g),
		newRunCodeCommand(g),
		newContextsCommand(g),
		newVersionCommand(g),
		newLifecycleCommand(g, "stop", "Stop a sandbox's container (its disk stays; the next call starts it again)"),
		newLifecycleCommand(g, "restart", "Stop and start a sandbox's container"),
		newLifecycleCommand(g, "renew", "Reset a sandbox's idle timer"),
		newLifecycleCommand(g, "pause", "Pause a sandbox (with --filesystem-only: as stop)"),
		newLifecycleCommand(g, "resume", "Resume a paused sandbox"),
		newUpdateCommand(g),
		newEventsCommand(g),
		newSessionCommand(g),
		newEnvCommand(g),
		newStartCommand(g),
		newPsCommand(g),
		newLogsCommand(g),
		newKillCommand(g),
		newWaitCommand(g),
		newImageCommand(g),
		newSnapshotCommand(g),
		newBackupCommand(g),
		newExposeCommand(g), newPortsCommand(g), newUnexposeCommand(g), newLinkCommand(g),
		newShellCommand(g),
		newCopyCommand(g),
		newFilesCommand(g),
		newGitCommand(g),
		newMCPCommand(g),
		newMountCommand(g), newUnmountCommand(g), newMountsCommand(g), newSecretCommand(g), newVolumeCommand(g),
		newKeyCommand(g),
		newNodeCommand(g),
	)
	return root
}

// daemonURL returns the URL the commands talk to.
func (g *globals) daemonURL() string {
	if g.root.PersistentFlags().Changed("url") {
		return g.url
	}
	if u := g.e.getenv(client.EnvURL); u != "" {
		return u
	}
	return client.DefaultURL
}

// client returns an SDK client for the daemon the flags name.
func (g *globals) client() (*client.Client, error) {
	base := g.daemonURL()
	token := resolveToken(tokenSources{
		flag:    g.token,
		flagSet: g.root.PersistentFlags().Changed("token"),
		getenv:  g.e.getenv,
		baseURL: base,
	})
	opts := []client.Option{client.WithToken(token), client.WithUserAgent("sandbox-cli/" + version)}
	if g.tenant != "" {
		opts = append(opts, client.WithTenant(g.tenant))
	}
	c, err := client.New(base, opts...)
	if err != nil {
		return nil, &usageError{cmd: "sandbox", err: err}
	}
	return c, nil
}

// printJSON writes v as indented JSON, without Go's HTML escaping: a
// person reading it, or grep, expects <div>, not \u003cdiv\u003e.
func printJSON(w io.Writer, v any) error {
	return encodeJSON(w, v, "  ")
}

// encodeJSON writes v as one JSON document (indented with indent, or on one
// line when indent is empty) and a newline, without HTML escaping.
func encodeJSON(w io.Writer, v any, indent string) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// exactArgs is cobra.ExactArgs with the error marked as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("want %d argument(s), got %d", n, len(args))}
		}
		return nil
	}
}

// minArgs is cobra.MinimumNArgs with the error marked as a usage error.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("want at least %d argument(s), got %d", n, len(args))}
		}
		return nil
	}
}

// rangeArgs is cobra.RangeArgs with the error marked as a usage error.
func rangeArgs(lo, hi int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("want %d to %d arguments, got %d", lo, hi, len(args))}
		}
		return nil
	}
}
