package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

func newSessionCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "session",
		Short: "Manage a sandbox's sessions (persistent shells)",
		Long: `A session is a persistent shell of a sandbox: its environment, working
directory, functions and aliases are its own; files and processes are shared
by all sessions of the sandbox. Every sandbox has the session "default".
Run commands in a session with 'sandbox exec --session NAME'.`,
	}
	cmd.AddCommand(newSessionCreateCommand(g), newSessionListCommand(g), newSessionRemoveCommand(g))
	return cmd
}

func newSessionCreateCommand(g *globals) *cobra.Command {
	var env []string
	var cwd, user string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create [flags] ID NAME",
		Short: "Create a session",
		Long: `Create the session NAME in the sandbox ID. --user runs its shell (and the
processes it starts) as that user of the sandbox, created on demand with a
home directory.`,
		Example: `  sandbox session create demo build --env NODE_ENV=production --cwd /workspace/app
  sandbox session create demo agent --user coder --env ANTHROPIC_API_KEY`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := []client.SessionOption{client.WithSessionID(args[1])}
			if len(env) > 0 {
				vars, err := parseEnv(env, g.e.getenv)
				if err != nil {
					return &usageError{cmd: cmd.CommandPath(), err: err}
				}
				opts = append(opts, client.WithEnv(vars))
			}
			if cwd != "" {
				opts = append(opts, client.WithCwd(cwd))
			}
			if user != "" {
				opts = append(opts, client.AsUser(user))
			}
			if timeout > 0 {
				opts = append(opts, client.WithCommandTimeout(timeout))
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			s, err := c.Sandbox(args[0]).CreateSession(cmd.Context(), opts...)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.e.stdout, s.ID())
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&env, "env", "e", nil, "set a variable in the session: `K=V`, or K to pass on the local value (repeatable)")
	fl.StringVarP(&cwd, "cwd", "w", "", "initial working directory (default /workspace)")
	fl.StringVarP(&user, "user", "u", "", "run the session as this user")
	fl.DurationVar(&timeout, "command-timeout", 0, "default timeout of the session's commands")
	return cmd
}

func newSessionListCommand(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "ls [--json] ID",
		Aliases: []string{"list"},
		Short:   "List a sandbox's sessions",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.Sandbox(args[0]).ListSessions(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []api.Session{}
				}
				return printJSON(g.e.stdout, api.SessionList{Sessions: list})
			}
			t := newTable("NAME\tUSER\tCWD\tCREATED\tENV")
			now := g.e.now()
			for _, s := range list {
				u := s.User
				if u == "" {
					u = "root"
				}
				t.row("%s\t%s\t%s\t%s\t%s", s.ID, u, s.Cwd, ago(now, s.CreatedAt), strings.Join(s.Env, ","))
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSessionRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete a session, killing what runs in it and its processes",
		Args:    exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.Sandbox(args[0]).DeleteSession(cmd.Context(), args[1]); err != nil {
				return err
			}
			_, err = fmt.Fprintln(g.e.stdout, args[1])
			return err
		},
	}
}

func newEnvCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "env",
		Short: "Set environment variables of a sandbox or one of its sessions",
		Long: `Sandbox-level variables apply to the default session (before its next
command) and to every session created afterwards; session-level ones to that
session and the processes it starts. A command's own --env wins over both.`,
	}
	var session string
	set := &cobra.Command{
		Use:     "set [--session S] ID K=V...",
		Short:   "Set variables (K alone passes on the local value of K)",
		Example: "  sandbox env set demo NODE_ENV=production OPENAI_API_KEY",
		Args:    minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			vars, err := parseEnv(args[1:], g.e.getenv)
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			sb := c.Sandbox(args[0])
			if session != "" {
				return sb.Session(session).SetEnvVars(cmd.Context(), vars)
			}
			return sb.SetEnvVars(cmd.Context(), vars)
		},
	}
	set.Flags().StringVar(&session, "session", "", "set them in this session only")
	unset := &cobra.Command{
		Use:   "unset [--session S] ID K...",
		Short: "Unset variables",
		Args:  minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			sb := c.Sandbox(args[0])
			if session != "" {
				return sb.Session(session).UnsetEnvVars(cmd.Context(), args[1:]...)
			}
			return sb.UnsetEnvVars(cmd.Context(), args[1:]...)
		},
	}
	unset.Flags().StringVar(&session, "session", "", "unset them in this session only")
	cmd.AddCommand(set, unset)
	return cmd
}
