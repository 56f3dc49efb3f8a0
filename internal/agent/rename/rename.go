// Package rename gives a started gVisor sandbox its name: the hostname of
// its UTS namespace and its /etc/hostname and /etc/hosts. The daemon runs
// it through `runsc exec` with CAP_SYS_ADMIN when it hands out a warm
// gVisor sandbox: gVisor's UTS namespace lives in its own kernel, where the
// daemon's setns cannot reach, and it caches the sandbox's files, so they
// are written from inside. It never runs as part of the agent.
//
// `sandbox-agent rename NAME` names the sandbox and exits. `sandbox-agent
// rename --stdin` is started while the sandbox waits in the pool, off the
// path of any call: it says "ready" on stdout, reads the name as one line
// on stdin when the sandbox is handed out, names it, answers "ok" (or
// "error: ...") on stdout, so that naming costs a pipe round trip instead
// of a runsc exec (about 200 ms). It then waits for end of file on stdin
// before it exits, so that its exit (a process's teardown in gVisor and
// runsc's on the host) does not share the sandbox's CPU with the first
// call: the daemon closes stdin a little later. At end of file before a
// name it exits without naming anything. On amd64 everything after
// "ready" is its keeper's, a process it forks (see keeper.go).
//
// With `--tell FIFO` (the agent's, see TellFIFO) it also tells the agent:
// "ready" once it waits, then "ok" (or "error") once the sandbox is named,
// or "gone" if it exits without naming it; it then says "ready tell" on
// stdout, and the daemon may send the name and the sandbox's first call at
// once: the agent holds the call until the name is in place (the agent's
// awaitNamer). Without the FIFO (an agent that has none) it says "ready".
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

	"github.com/sandboxd/sandboxd/internal/agent/rawio"
)

// Arg is the agent's subcommand that runs Main.
const Arg = "rename"

// StdinFlag makes Main read the name from stdin (see the package comment).
const StdinFlag = "--stdin"

// TellFlag, followed by the FIFO's path, makes Main tell the agent how the
// naming went (see the package comment).
const TellFlag = "--tell"

// TellFIFO is the name of the FIFO in the agent's run directory that a
// namer tells the agent on. Its lines: TellReady, TellOK, TellError,
// TellGone.
const TellFIFO = "namer"

// The lines a namer writes to TellFIFO.
const (
	TellReady = "ready"
	TellOK    = "ok"
	TellError = "error"
	TellGone  = "gone"
)

// maxName bounds a name: a hostname is at most 64 bytes.
const maxName = 64

// Main names the sandbox and exits.
func Main(args []string) {
	// Nothing in the sandbox may ptrace or read the memory of a process
	// that holds CAP_SYS_ADMIN while it waits.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	tell := -1
	if len(args) == 3 && args[0] == StdinFlag && args[1] == TellFlag {
		tell = openTell(args[2])
		args = args[:1]
	}
	if len(args) != 1 || args[0] == "" || len(args[0]) > maxName {
		fmt.Fprintln(os.Stderr, "usage: sandbox-agent rename NAME|--stdin [--tell FIFO]")
		os.Exit(2)
	}
	if args[0] != StdinFlag {
		if err := run(args[0]); err != nil {
			fmt.Fprintln(os.Stderr, "rename:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	k, err := keepCapabilities(tell)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rename:", err)
		os.Exit(1)
	}
	if tell >= 0 {
		answer("ready tell") // runtime.AdminReady
	} else {
		answer("ready") // runtime.AdminReady
	}
	if k != nil {
		os.Exit(k.wait()) // the keeper names the sandbox and answers
	}
	os.Exit(nameItself(tell))
}

// nameItself is the namer's part without a keeper: it reads the name,
// names the sandbox, answers, and waits for end of file. It returns the
// namer's exit status.
func nameItself(tell int) int {
	in, err := pollStdin()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rename:", err)
		return 1
	}
	name, err := readName(in)
	if err != nil {
		say(tell, TellGone)
		return 1 // EOF: the sandbox was discarded, or the daemon went away
	}
	code := 0
	if err := run(name); err != nil {
		say(tell, TellError)
		answer("error: " + err.Error())
		code = 1
	} else {
		say(tell, TellOK)
		answer("ok")
	}
	io.Copy(io.Discard, in) // until the daemon closes it
	return code
}

// keepCapabilities starts the keeper, which alone keeps the namer's
// capabilities from now on and takes the name on stdin (see keeper.go),
// and drops the namer's own. If the keeper cannot be forked, the namer
// keeps them and names the sandbox itself (a nil keeper).
func keepCapabilities(tell int) (*keeper, error) {
	k, err := startKeeper([2]string{etcHostname, etcHosts}, keeperIO{in: 0, out: 1, tell: tell})
	if err != nil {
		return nil, nil
	}
	if err := dropCapabilities(); err != nil {
		k.kill()
		return nil, err
	}
	return k, nil
}

// Without a keeper, the namer makes raw system calls only on the take's
// way (unix.RawSyscall), and waits for its name in the Go runtime's poller, as
// the agent does on a command's way (see package rawio): a
// read that blocks a thread, or any call made through unix.Syscall, wakes
// the runtime's monitor thread, which then sleeps 20 us at a time, each
// sleep a system call of its own in gVisor, until the namer is idle
// again. The namer's part of a take, measured by the sandbox's CPU time,
// was about half of all that naming adds to it.

// pollStdin makes stdin (the daemon's pipe) non-blocking and returns it as
// a reader that waits in the runtime's poller and reads with raw calls.
func pollStdin() (io.Reader, error) {
	if err := unix.SetNonblock(0, true); err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	rc, err := os.NewFile(0, "stdin").SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("stdin: %w", err)
	}
	return rawio.Reader{RC: rc}, nil
}

// answer says line to the daemon on stdout.
func answer(line string) {
	rawWrite(1, []byte(line+"\n"))
}

// rawWrite writes data to fd with raw system calls: to a regular file, a
// FIFO opened non-blocking, or the daemon's pipe, which always reads what
// the namer says.
func rawWrite(fd int, data []byte) error {
	if errno := rawWriteAll(fd, data); errno != 0 {
		return syscall.Errno(errno)
	}
	return nil
}

// openTell opens the agent's FIFO for writing and says TellReady on it, or
// returns -1 if there is none (an agent from before it) or it cannot. It
// never blocks: the agent holds the FIFO open for reading from its start.
func openTell(path string) int {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1
	}
	if !say(fd, TellReady) {
		unix.Close(fd)
		return -1
	}
	return fd
}

// say writes line to the agent's FIFO fd, if there is one, in one write
// (a line shorter than PIPE_BUF is never split or interleaved).
func say(fd int, line string) bool {
	if fd < 0 {
		return false
	}
	return rawWrite(fd, []byte(line+"\n")) == nil
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
	if err := rawSethostname(name); err != nil {
		return fmt.Errorf("setting the hostname: %w", err)
	}
	files := map[string]string{
		etcHostname: name + "\n",
		etcHosts:    hostsHead + name + "\n",
	}
	for path, content := range files {
		if err := writeFile(path, content); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	// Every capability goes before the daemon or the agent hears back, so
	// that nothing with CAP_SYS_ADMIN is left when user code first runs,
	// and last: it stops and starts every thread of the runtime, and the
	// start wakes the monitor thread, which sleeps again at once only once
	// the namer is idle. The files need no privilege beyond root's, and
	// no user code runs in the sandbox before the namer said ok.
	return dropCapabilities()
}

// The files a namer writes.
const (
	etcHostname = "/etc/hostname"
	etcHosts    = "/etc/hosts"
)

// rawSethostname sets the hostname with a raw system call.
func rawSethostname(name string) error {
	p := []byte(name)
	if _, _, errno := unix.RawSyscall(unix.SYS_SETHOSTNAME, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0); errno != 0 {
		return errno
	}
	return nil
}

// writeFile replaces the content of path with three raw system calls
// (open, write, close). O_NOFOLLOW: the files are the daemon's, written
// before user code ran, but never follow a link out of them.
func writeFile(path, content string) error {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return err
	}
	if errno := keeperWrite(p, []byte(content)); errno != 0 {
		return syscall.Errno(errno)
	}
	return nil
}

// atFDCWD is AT_FDCWD as a system call argument.
var atFDCWD = func() uintptr { fd := unix.AT_FDCWD; return uintptr(fd) }()

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
