package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sandboxd/sandboxd/client"
)

type shellFlags struct {
	session  string
	terminal string
	shell    string
}

func newShellCommand(g *globals) *cobra.Command {
	var f shellFlags
	cmd := &cobra.Command{
		Use:   "shell ID [--session S]",
		Short: "Open an interactive shell in a sandbox",
		Long: `Open an interactive shell on a terminal in the sandbox ID (created on
first use). Your terminal is put in raw mode, so keys such as Ctrl-C, Ctrl-Z
and arrows go to the sandbox, and programs like vim, top and python3 work;
resizing your window resizes the remote terminal. When the remote shell
exits, your terminal is restored and sandbox exits with the shell's status.

--session starts the shell with that session's environment and working
directory. Terminals have names (--terminal; default the session's, else
"default"): opening a name that runs attaches to it, several clients may
share one, and a new client first sees the recent screen. A terminal nobody
is attached to keeps running for 10 minutes, so a dropped connection can
come back to it.

With standard input not a terminal, input is passed through as is and its
end ends the shell (like Ctrl-D).`,
		Example: `  sandbox shell demo
  sandbox shell demo --session build
  echo 'uname -a; exit' | sandbox shell demo --terminal scripted`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runShell(cmd.Context(), g, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.session, "session", "", "start the shell with this session's environment and directory")
	fl.StringVar(&f.terminal, "terminal", "", "the terminal's name (default: the session's, else \"default\")")
	fl.StringVar(&f.shell, "shell", "", "absolute path of the shell (default /bin/bash)")
	return cmd
}

// fdFile is what os.File offers for terminal control.
type fdFile interface{ Fd() uintptr }

// terminalFD returns the descriptor of v if it is a terminal.
func terminalFD(v any) (int, bool) {
	f, ok := v.(fdFile)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

func runShell(ctx context.Context, g *globals, f shellFlags, id string) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	inFD, inTTY := terminalFD(g.e.stdin)
	outFD, outTTY := terminalFD(g.e.stdout)
	opts := client.TerminalOptions{ID: f.terminal, Session: f.session, Shell: f.shell}
	if outTTY {
		if w, h, err := term.GetSize(outFD); err == nil {
			opts.Cols, opts.Rows = w, h
		}
	}
	t, err := c.Sandbox(id).Terminal(ctx, opts)
	if err != nil {
		return err
	}
	defer t.Close()
	stop := context.AfterFunc(ctx, func() { t.Close() }) // SIGTERM
	defer stop()

	if inTTY {
		old, err := term.MakeRaw(inFD)
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer term.Restore(inFD, old)
	}
	if outTTY {
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case <-done:
					return
				case <-winch:
					if w, h, err := term.GetSize(outFD); err == nil {
						t.Resize(w, h)
					}
				}
			}
		}()
	}
	// Input runs until the process exits: a read of a terminal cannot be
	// interrupted, so this goroutine is left blocked when the shell ends.
	go func() {
		io.Copy(t, g.e.stdin)
		if !inTTY {
			t.Write([]byte{4}) // end of input: Ctrl-D
		}
	}()
	_, err = io.Copy(g.e.stdout, t)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return err
	}
	code, ok := t.ExitCode()
	if !ok {
		return fmt.Errorf("the terminal closed without an exit status: %w", client.ErrUnavailable)
	}
	if code != 0 {
		return exitStatus(code)
	}
	return nil
}
