// Command sandbox is the command-line client of sandboxd. It talks to the
// daemon only through the public Go SDK (package client), so everything it
// does can be done from Go or plain HTTP too. It must never reach into the
// daemon's internals or its state directory, with one exception: it reads
// the local daemon's token file when no token is given (see token.go).
//
// main only wires signals and the exit code; run (root.go) builds the cobra
// commands, each in its own file.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first Ctrl-C cancels ctx, which ends a running exec's stream, and
	// the daemon then kills the remote command. Afterwards the default
	// handling is back, so a second Ctrl-C kills the CLI at once.
	context.AfterFunc(ctx, stop)
	e := &env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		now:    time.Now,
	}
	err := run(ctx, e, os.Args[1:])
	stop()
	os.Exit(exitCode(e.stderr, err))
}
