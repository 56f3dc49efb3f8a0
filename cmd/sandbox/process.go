package main

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

func newStartCommand(g *globals) *cobra.Command {
	var name, session, cwd, user string
	var env []string
	var timeout time.Duration
	var autoCleanup bool
	cmd := &cobra.Command{
		Use:   "start [flags] ID [-- COMMAND...]",
		Short: "Start a sandbox, or a background process in it",
		Long: `Without COMMAND: start the sandbox ID if it is sleeping, stopped or failed
(like any call would), and print its status.

With COMMAND: start COMMAND in the background in the sandbox ID and print
the process's ID. The process outlives this command; follow it with
'sandbox logs -f', 'sandbox wait' and 'sandbox ps'. COMMAND is read as by
'sandbox exec'.`,
		Example: `  sandbox start demo
  sandbox start demo --name web -- python3 -m http.server 8000
  sandbox wait demo web --port 8000`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && cmd.ArgsLenAtDash() < 0 {
				return nil // start the sandbox itself
			}
			if _, _, err := splitExecArgs(args, cmd.ArgsLenAtDash()); err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && cmd.ArgsLenAtDash() < 0 {
				return startSandbox(cmd, g, args[0])
			}
			id, words, _ := splitExecArgs(args, cmd.ArgsLenAtDash())
			var opts []client.ProcessOption
			if name != "" {
				opts = append(opts, client.WithProcessID(name))
			}
			if session != "" {
				opts = append(opts, client.InSession(session))
			}
			if cwd != "" {
				opts = append(opts, client.WithCwd(cwd))
			}
			if user != "" {
				opts = append(opts, client.AsUser(user))
			}
			if timeout > 0 {
				opts = append(opts, client.WithTimeout(timeout))
			}
			if autoCleanup {
				opts = append(opts, client.WithAutoCleanup())
			}
			if len(env) > 0 {
				vars, err := parseEnv(env, g.e.getenv)
				if err != nil {
					return &usageError{cmd: cmd.CommandPath(), err: err}
				}
				opts = append(opts, client.WithEnv(vars))
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			p, err := c.Sandbox(id).StartProcess(cmd.Context(), commandLine(words), opts...)
			if err != nil {
				return err
			}
			if p.Status == api.ProcessError {
				return fmt.Errorf("process %s could not be started: %s", p.ID, p.StatusReason)
			}
			_, err = fmt.Fprintln(g.e.stdout, p.ID)
			return err
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "the process's ID (default: generated)")
	fl.StringVar(&session, "session", "", "start it in this session (its environment, cwd and user)")
	fl.StringArrayVarP(&env, "env", "e", nil, "set a variable for the process: `K=V`, or K (repeatable)")
	fl.StringVarP(&cwd, "cwd", "w", "", "working directory")
	fl.StringVarP(&user, "user", "u", "", "run as this user")
	fl.DurationVar(&timeout, "timeout", 0, "kill the process's tree after this long")
	fl.BoolVar(&autoCleanup, "auto-cleanup", false, "remove the record and logs a while after the process ends")
	return cmd
}

func newPsCommand(g *globals) *cobra.Command {
	var asJSON bool
	var status string
	cmd := &cobra.Command{
		Use:   "ps [--json] [--status S] ID",
		Short: "List a sandbox's background processes",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var filter []api.ProcessStatus
			if status != "" {
				filter = append(filter, api.ProcessStatus(status))
			}
			list, err := c.Sandbox(args[0]).ListProcesses(cmd.Context(), filter...)
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []api.Process{}
				}
				return printJSON(g.e.stdout, api.ProcessList{Processes: list})
			}
			t := newTable("ID\tPID\tSTATUS\tEXIT\tSESSION\tSTARTED\tCOMMAND")
			now := g.e.now()
			for _, p := range list {
				exit := "-"
				if p.ExitCode != nil {
					exit = fmt.Sprint(*p.ExitCode)
				}
				command := oneLine(p.Command)
				if len(command) > 60 {
					command = command[:57] + "..."
				}
				t.row("%s\t%d\t%s\t%s\t%s\t%s\t%s", p.ID, p.PID, p.Status, exit, p.SessionID, ago(now, p.StartTime), command)
			}
			return t.write(g.e.stdout)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&status, "status", "", "only processes in this status (running, completed, failed, killed, error)")
	return cmd
}

func newLogsCommand(g *globals) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] ID PROC",
		Short: "Print a background process's output",
		Long: `Print what the process PROC wrote: its stdout to stdout, its stderr to
stderr. With -f, keep printing live output until the process ends (Ctrl-C
stops following; the process goes on).`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			sb := c.Sandbox(args[0])
			if !follow {
				logs, err := sb.GetProcessLogs(cmd.Context(), args[1])
				if err != nil {
					return err
				}
				if _, err := g.e.stdout.Write(logs.Stdout); err != nil {
					return err
				}
				_, err = g.e.stderr.Write(logs.Stderr)
				return err
			}
			st, err := sb.StreamProcessLogs(cmd.Context(), args[1])
			if err != nil {
				return err
			}
			defer st.Close()
			for {
				ev, err := st.Next()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				switch ev.Type {
				case api.EventStdout:
					_, err = io.WriteString(g.e.stdout, ev.Data)
				case api.EventStderr:
					_, err = io.WriteString(g.e.stderr, ev.Data)
				}
				if err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow live output until the process ends")
	return cmd
}

func newKillCommand(g *globals) *cobra.Command {
	var signal string
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "kill [--signal S] ID PROC",
		Short: "Signal a background process's whole tree",
		Long: `Send a signal (default SIGTERM) to the process PROC and everything it
started. After SIGTERM, what is still alive after --grace gets SIGKILL.
PROC "all" kills every running process. Prints the process's status.`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			var opts []client.KillOption
			if grace > 0 {
				opts = append(opts, client.WithGracePeriod(grace))
			}
			sb := c.Sandbox(args[0])
			if args[1] == "all" {
				n, err := sb.KillAllProcesses(cmd.Context(), signal, opts...)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(g.e.stdout, "%d killed\n", n)
				return err
			}
			p, err := sb.KillProcess(cmd.Context(), args[1], signal, opts...)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(g.e.stdout, "%s %s\n", p.ID, p.Status)
			return err
		},
	}
	cmd.Flags().StringVarP(&signal, "signal", "s", "", "signal name or number (default SIGTERM)")
	cmd.Flags().DurationVar(&grace, "grace", 0, "after SIGTERM, wait this long before SIGKILL (default 5s)")
	return cmd
}

func newWaitCommand(g *globals) *cobra.Command {
	var pattern, httpPath string
	var regex, exit bool
	var port int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait ID PROC [--log PATTERN | --port N | --exit] [--timeout D]",
		Short: "Wait until a background process is ready, or has ended",
		Long: `Wait, inside the sandbox, until the process PROC prints a line containing
PATTERN (--log; --regex for a regular expression; the line is printed), until
port N accepts connections (--port; --http PATH to want an HTTP 2xx/3xx), or
until it ends (--exit, the default; sandbox exits with its exit code).
A timeout exits 124; a process that ends before it is ready exits 125.`,
		Example: `  sandbox wait demo web --port 8000 --http /health --timeout 30s
  sandbox wait demo db --log 'ready to accept connections'`,
		Args: exactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			modes := 0
			for _, set := range []bool{pattern != "", port != 0, exit} {
				if set {
					modes++
				}
			}
			if modes > 1 {
				return &usageError{cmd: cmd.CommandPath(), err: errors.New("give one of --log, --port and --exit")}
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			p := c.Sandbox(args[0]).Process(args[1])
			ctx := cmd.Context()
			switch {
			case pattern != "":
				var line string
				if regex {
					re, rerr := regexp.Compile(pattern)
					if rerr != nil {
						return &usageError{cmd: cmd.CommandPath(), err: rerr}
					}
					line, err = p.WaitForLogRegexp(ctx, re, timeout)
				} else {
					line, err = p.WaitForLog(ctx, pattern, timeout)
				}
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(g.e.stdout, oneLine(line))
				return err
			case port != 0:
				_, err := p.WaitForPort(ctx, port, client.PortCheck{HTTP: httpPath != "", Path: httpPath, Timeout: timeout})
				return err
			default:
				code, err := p.WaitForExit(ctx, timeout)
				if err != nil {
					return err
				}
				if code != 0 {
					if code < 0 {
						return fmt.Errorf("process %s ended %s without an exit code (%s)", args[1], p.Status, strings.TrimSpace(p.StatusReason))
					}
					return exitStatus(code)
				}
				return nil
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&pattern, "log", "", "wait for a line containing `PATTERN`")
	fl.BoolVar(&regex, "regex", false, "read --log as a regular expression (RE2)")
	fl.IntVar(&port, "port", 0, "wait for this port to accept connections")
	fl.StringVar(&httpPath, "http", "", "with --port: wait for GET `PATH` to answer 2xx or 3xx")
	fl.BoolVar(&exit, "exit", false, "wait for the process to end (the default)")
	fl.DurationVar(&timeout, "timeout", 0, "give up after this long (default 30s)")
	return cmd
}

// startSandbox is `sandbox start ID` without a command: the lifecycle
// verb, beside stop and restart.
func startSandbox(cmd *cobra.Command, g *globals, id string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	sb, err := c.Sandbox(id).Start(cmd.Context())
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.e.stdout, "%s\t%s\n", sb.ID, sb.Status)
	return err
}
