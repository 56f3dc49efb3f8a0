package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// parsePortArg reads a PORT argument.
func parsePortArg(cmd *cobra.Command, s string) (int, error) {
	port, err := strconv.Atoi(s)
	if err != nil {
		return 0, &usageError{cmd: cmd.CommandPath(), err: fmt.Errorf("port %q is not a number", s)}
	}
	return port, nil
}

func newExposeCommand(g *globals) *cobra.Command {
	var name, token string
	var private, asJSON bool
	cmd := &cobra.Command{
		Use:   "expose ID PORT [--name N] [--private]",
		Short: "Give a port of a sandbox a preview URL",
		Long: `Expose PORT (1024-65535), on which a service in the sandbox listens on
0.0.0.0 or 127.0.0.1, and print its preview URL:

  http://{port}-{id}-{token}.localhost:7070/

Browsers send *.localhost to this machine by themselves. The token is random
unless --token chooses it (the API token's --token goes before the command's
name: sandbox --token API expose ...). With --private the URL alone is not enough: use
'sandbox link' for a signed link that opens it in a browser, or send the API
token. Exposing a port again with the same options prints the same URL.`,
		Example: `  sandbox exec demo -- 'nohup python3 -m http.server 8000 >/dev/null 2>&1 &'
  sandbox expose demo 8000 --name docs`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePortArg(cmd, args[1])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var opts []client.ExposeOption
			if name != "" {
				opts = append(opts, client.WithPortName(name))
			}
			if token != "" {
				opts = append(opts, client.WithPreviewToken(token))
			}
			if private {
				opts = append(opts, client.Private())
			}
			p, err := c.Sandbox(args[0]).ExposePort(cmd.Context(), port, opts...)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(g.e.stdout, p)
			}
			_, err = fmt.Fprintln(g.e.stdout, p.URL)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "a label for the port")
	fl.StringVar(&token, "token", "", "the URL's token (12-16 of a-z, 0-9, _; default random)")
	fl.BoolVar(&private, "private", false, "require the API token or a signed link as well as the URL")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newPortsCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ports ID [--json]",
		Short: "List a sandbox's exposed ports and their preview URLs",
		Long: `List the exposed ports of the sandbox ID as a table: PORT, NAME, ACCESS
(public or private) and URL. With --json, print the API's answer,
{"ports": [...]}.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			ports, err := c.Sandbox(args[0]).ExposedPorts(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if ports == nil {
					ports = []api.ExposedPort{}
				}
				return printJSON(g.e.stdout, api.ExposedPortList{Ports: ports})
			}
			t := newTable("PORT\tNAME\tACCESS\tURL")
			for _, p := range ports {
				access := "public"
				if !p.Public {
					access = "private"
				}
				name := p.Name
				if name == "" {
					name = "-"
				}
				t.row("%d\t%s\t%s\t%s", p.Port, oneLine(name), access, p.URL)
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newUnexposeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "unexpose ID PORT",
		Short: "Close a port's preview URL",
		Long: `Close the preview URL of PORT and every link to it. A port that is not
exposed is not an error. Exposing the port again gives a new URL.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePortArg(cmd, args[1])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			return c.Sandbox(args[0]).UnexposePort(cmd.Context(), port)
		},
	}
}

func newLinkCommand(g *globals) *cobra.Command {
	var expires time.Duration
	cmd := &cobra.Command{
		Use:   "link ID PORT [--expires 1h]",
		Short: "Print a signed, expiring link to an exposed port",
		Long: `Print a link to the exposed PORT that works in a browser until it
expires, private ports included: opening it sets a cookie for that preview
host. Unexposing the port voids its links.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			port, err := parsePortArg(cmd, args[1])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			link, err := c.Sandbox(args[0]).PreviewLink(cmd.Context(), port, expires)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.e.stdout, link.URL)
			return err
		},
	}
	cmd.Flags().DurationVar(&expires, "expires", time.Hour, "how long the link works (at most 168h)")
	return cmd
}
