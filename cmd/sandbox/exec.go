package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

type execFlags struct {
	session     string
	env         []string
	cwd         string
	timeout     time.Duration
	interactive bool
}

func newExecCommand(g *globals) *cobra.Command {
	var f execFlags
	cmd := &cobra.Command{
		Use:   "exec [flags] ID -- COMMAND...",
		Short: "Run a command in a sandbox, streaming its output",
		Long: `Run a command in the sandbox ID (created on first use) and stream its
output as it arrives: the command's stdout to stdout, its stderr to stderr.
sandbox exits with the command's exit code.

One word after -- is sent verbatim as a shell command line, so pipes,
variables and && work when you quote it:

  sandbox exec demo -- 'cd /tmp && echo $HOME | wc -c'

Several words are a command and its arguments; each is quoted again so that
the remote shell sees the same words your shell gave sandbox:

  sandbox exec demo -- python3 -c 'print(2+2)'

Commands run in the sandbox's default session, a persistent bash: cd, export
and shell functions carry over to the next exec. --env and --cwd apply to
this command only.

Ctrl-C ends the stream, and the daemon kills the command. Exit codes: the
command's own; 124 when --timeout killed it; 125 when sandbox itself failed;
130 when interrupted.`,
		Example: `  sandbox exec demo -- python3 -c 'print(2+2)'
  sandbox exec --timeout 5s demo -- sleep 60
  echo hello | sandbox exec -i demo -- tr a-z A-Z
  sandbox exec --env DEBUG=1 --cwd /tmp demo -- 'ls -la; env | grep DEBUG'`,
		Args: func(cmd *cobra.Command, args []string) error {
			_, _, err := splitExecArgs(args, cmd.ArgsLenAtDash())
			if err != nil {
				return &usageError{cmd: cmd.CommandPath(), err: err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id, words, _ := splitExecArgs(args, cmd.ArgsLenAtDash())
			return runExec(cmd.Context(), g, f, id, commandLine(words))
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.session, "session", "", "run in this session instead of the default one")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable for this command: `K=V`, or K to pass on the local value (repeatable)")
	fl.StringVarP(&f.cwd, "cwd", "w", "", "working directory for this command")
	fl.DurationVar(&f.timeout, "timeout", 0, "kill the command after this long, e.g. 30s or 5m (exit code 124)")
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "read all of stdin and feed it to the command")
	return cmd
}

// splitExecArgs splits exec's arguments into the ID and the command words.
// dash is the number of arguments before `--`, or -1 without one; then the
// words are everything after the ID (a convenience for commands without
// flags of their own).
func splitExecArgs(args []string, dash int) (id string, words []string, err error) {
	switch {
	case len(args) == 0:
		return "", nil, errors.New("missing sandbox ID and command (sandbox exec ID -- COMMAND...)")
	case dash == 0:
		return "", nil, errors.New("missing sandbox ID before --")
	case dash > 1:
		return "", nil, fmt.Errorf("want one sandbox ID before --, got %d words", dash)
	case len(args) == 1:
		return "", nil, errors.New("missing command (sandbox exec ID -- COMMAND...)")
	}
	return args[0], args[1:], nil
}

func runExec(ctx context.Context, g *globals, f execFlags, id, command string) error {
	var opts []client.ExecOption
	if f.session != "" {
		opts = append(opts, client.InSession(f.session))
	}
	if len(f.env) > 0 {
		env, err := parseEnv(f.env, g.e.getenv)
		if err != nil {
			return &usageError{cmd: "sandbox exec", err: err}
		}
		opts = append(opts, client.WithEnv(env))
	}
	if f.cwd != "" {
		opts = append(opts, client.WithCwd(f.cwd))
	}
	if f.timeout < 0 {
		return &usageError{cmd: "sandbox exec", err: fmt.Errorf("--timeout %s is negative", f.timeout)}
	}
	if f.timeout > 0 {
		opts = append(opts, client.WithTimeout(f.timeout))
	}
	if f.interactive {
		stdin, err := readStdin(ctx, g.e.stdin)
		if err != nil {
			return err
		}
		opts = append(opts, client.WithStdin(stdin))
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	st, err := c.Sandbox(id).ExecStream(ctx, command, opts...)
	if err != nil {
		return err
	}
	defer st.Close()
	for ev, err := range st.All() {
		if err != nil {
			return err
		}
		switch ev.Type {
		case api.EventStdout:
			if _, err := io.WriteString(g.e.stdout, ev.Data); err != nil {
				return fmt.Errorf("writing stdout: %w", err)
			}
		case api.EventStderr:
			if _, err := io.WriteString(g.e.stderr, ev.Data); err != nil {
				return fmt.Errorf("writing stderr: %w", err)
			}
		case api.EventComplete:
			if code := *ev.ExitCode; code != 0 {
				return exitStatus(code)
			}
			return nil
		}
	}
	// All ends with complete, an error, or a cancelled context; this is
	// only reached if the iterator's contract changes.
	return fmt.Errorf("exec stream ended without a result: %w", client.ErrUnavailable)
}

// readStdin reads all of r, up to the API's stdin limit. The read runs in
// its own goroutine so that Ctrl-C is honoured while a terminal waits for
// input; on cancellation that goroutine stays blocked in Read, and the
// process exits right after.
func readStdin(ctx context.Context, r io.Reader) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		data, err := io.ReadAll(io.LimitReader(r, api.MaxStdinBytes+1))
		done <- result{data, err}
	}()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-done:
		if res.err != nil {
			return nil, fmt.Errorf("reading stdin: %w", res.err)
		}
		if len(res.data) > api.MaxStdinBytes {
			return nil, &usageError{cmd: "sandbox exec", err: fmt.Errorf("stdin is larger than %d MiB, the most exec accepts; copy large files in another way", api.MaxStdinBytes>>20)}
		}
		return res.data, nil
	}
}
