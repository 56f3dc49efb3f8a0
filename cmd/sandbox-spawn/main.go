// Command sandbox-spawn is the spawn wrapper (package spawn) on its own:
// `sandbox-spawn spawn [flags] -- PROG ARGS...`, the command line the agent
// binary takes for it too. The daemon bind-mounts it into crun and runc
// sandboxes beside the agent, which starts every user program, session
// shells first, through it instead of re-executing itself.
//
// Why a binary of its own: a Go program's start-up grows with what it
// links. The agent links an HTTP server and crypto, and its package
// initialisers (101 of them then) ran again in every wrapper, on the way to the
// sandbox's first shell and to every command started without a spare. This
// one links only the wrapper (a fifth of the size). Like the agent it is
// static (CGO_ENABLED=0) so that it runs in any image.
package main

import (
	"fmt"
	"os"

	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != spawn.Arg {
		fmt.Fprintf(os.Stderr, "usage: %s %s [flags] -- PROG ARGS...\n", os.Args[0], spawn.Arg)
		os.Exit(2)
	}
	spawn.Main(os.Args[2:]) // never returns
}
