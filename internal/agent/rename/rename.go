// Package rename gives a started gVisor sandbox its name: the hostname of
// its UTS namespace and its /etc/hostname and /etc/hosts. The daemon runs
// it through `runsc exec` with CAP_SYS_ADMIN when it hands out a warm
// gVisor sandbox: gVisor's UTS namespace lives in its own kernel, where the
// daemon's setns cannot reach, and it caches the sandbox's files, so they
// are written from inside. It never runs as part of the agent.
//
// `sandbox-agent rename NAME` names the sandbox and exits. `sandbox-agent
// rename --stdin` is started while the sandbox waits in the pool, off the
// path of any call: it says "ready" on stdout, reads the name as one line on stdin when the
// sandbox is handed out, names it, answers "ok" (or "error: ...") on
// stdout and exits, so that naming costs a pipe round trip instead of a
// runsc exec (about 200 ms). At EOF it exits without naming anything.
package rename

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Arg is the agent's subcommand that runs Main.
const Arg = "rename"

// StdinFlag makes Main read the name from stdin (see the package comment).
const StdinFlag = "--stdin"

// maxName bounds a name: a hostname is at most 64 bytes.
const maxName = 64

// Main names the sandbox and exits.
func Main(args []string) {
	// Nothing in the sandbox may ptrace or read the memory of a process
	// that holds CAP_SYS_ADMIN while it waits.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	if len(args) != 1 || args[0] == "" || len(args[0]) > maxName {
		fmt.Fprintln(os.Stderr, "usage: sandbox-agent rename NAME|--stdin")
		os.Exit(2)
	}
	if args[0] != StdinFlag {
		if err := run(args[0]); err != nil {
			fmt.Fprintln(os.Stderr, "rename:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	fmt.Fprintln(os.Stdout, "ready") // runtime.AdminReady
	name, err := readName(os.Stdin)
	if err != nil {
		os.Exit(1) // EOF: the sandbox was discarded, or the daemon went away
	}
	if err := run(name); err != nil {
		fmt.Fprintln(os.Stdout, "error:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stdout, "ok")
	os.Exit(0)
}

// readName reads one line of at most maxName bytes.
func readName(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(r, maxName+2).ReadString('\n')
	if err != nil {
		return "", err
	}
	name := strings.TrimSuffix(line, "\n")
	if name == "" || len(name) > maxName {
		return "", fmt.Errorf("bad name %q", name)
	}
	return name, nil
}

func run(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("setting the hostname: %w", err)
	}
	// The files need no privilege beyond root's: give up every capability
	// before touching them and before the daemon hears back, so that
	// nothing with CAP_SYS_ADMIN is left while this process exits.
	if err := dropCapabilities(); err != nil {
		return err
	}
	files := map[string]string{
		"/etc/hostname": name + "\n",
		"/etc/hosts":    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t" + name + "\n",
	}
	for path, content := range files {
		if err := writeFile(path, content); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return nil
}

// writeFile replaces the content of path with three system calls (open,
// write, close; os.OpenFile would add the Go poller's), on the path of a
// warm sandbox's hand-out. O_NOFOLLOW: the files are the daemon's, written
// before user code ran, but never follow a link out of them.
func writeFile(path, content string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	data := []byte(content)
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return err
		}
		data = data[n:]
	}
	return unix.Close(fd)
}

// dropCapabilities empties the capability sets of every thread of the
// process: capabilities are per thread, and the Go runtime's other threads
// would otherwise keep CAP_SYS_ADMIN.
func dropCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	if errno != 0 {
		return fmt.Errorf("dropping capabilities: %w", errno)
	}
	return nil
}
