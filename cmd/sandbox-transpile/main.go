// Command sandbox-transpile is the code interpreter's TypeScript helper
// (package helper): `sandbox-transpile serve` transpiles cells for the
// agent, which starts it on the first cell that needs it. The daemon
// bind-mounts it into every sandbox beside the agent. Like the agent it is
// static (CGO_ENABLED=0) so that it runs in any image.
package main

import (
	"os"

	"github.com/sandboxd/sandboxd/internal/agent/transpile/helper"
)

func main() {
	helper.Main(os.Args[1:]) // never returns
}
