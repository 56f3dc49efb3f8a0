// Package failpoint lets crash-recovery tests kill the daemon at a chosen
// point: when SANDBOXD_FAILPOINT names a point, reaching it kills the
// process with SIGKILL, exactly as an operator's kill -9 would, but at a
// known moment. Without the variable every point is a no-op. It exists
// only so that "the daemon died mid-create" is a repeatable test.
package failpoint

import (
	"os"
	"strings"
	"syscall"
)

// Env is the variable that arms failpoints: a comma-separated list of
// point names.
const Env = "SANDBOXD_FAILPOINT"

var armed = parse(os.Getenv(Env))

func parse(v string) map[string]bool {
	m := map[string]bool{}
	for _, name := range strings.Split(v, ",") {
		if name = strings.TrimSpace(name); name != "" {
			m[name] = true
		}
	}
	return m
}

// Hit kills the process if the point name is armed.
func Hit(name string) {
	if armed[name] {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; wait for it
	}
}
