// Package rename gives a started gVisor sandbox its name: the hostname of
// its UTS namespace and its /etc/hostname and /etc/hosts. The daemon runs
// it (`sandbox-agent rename NAME`, through `runsc exec` with
// CAP_SYS_ADMIN) when it hands out a warm gVisor sandbox: gVisor's UTS
// namespace lives in its own kernel, where the daemon's setns cannot reach,
// and it caches the sandbox's files, so they are written from inside.
// It never runs as part of the agent.
package rename

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Arg is the agent's subcommand that runs Main.
const Arg = "rename"

// Main names the sandbox os.Args[2] and exits.
func Main(args []string) {
	if len(args) != 1 || args[0] == "" || len(args[0]) > 64 {
		fmt.Fprintln(os.Stderr, "usage: sandbox-agent rename NAME")
		os.Exit(2)
	}
	if err := run(args[0]); err != nil {
		fmt.Fprintln(os.Stderr, "rename:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func run(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("setting the hostname: %w", err)
	}
	files := map[string]string{
		"/etc/hostname": name + "\n",
		"/etc/hosts":    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + name + "\n",
	}
	for path, content := range files {
		// O_NOFOLLOW: the files are the daemon's, written before user code
		// ran, but never follow a link out of them.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o644)
		if err != nil {
			return err
		}
		_, err = f.WriteString(content)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}
