package rename

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/rawio"
)

// A waiting namer keeps CAP_SYS_ADMIN in one process of one thread, the
// keeper, and nowhere else. Capabilities belong to threads, and the Go
// runtime drops them from all of a process's threads only by stopping the
// world and signalling each thread to make the call itself
// (syscall.AllThreadsSyscall): in gVisor each signal is a round trip
// through the Sentry, and the world's restart wakes the runtime's monitor
// thread, which then polls until the namer is idle. On the take's way that
// cost about 3 ms of the sandbox's CPU time, a fifth of the take (loaded,
// interleaved with a namer that kept its capabilities). So while the
// sandbox waits in the pool the namer forks the keeper, a process that
// runs only the raw system calls below and never enters the Go runtime,
// and then drops its own capabilities, off the take's way.
//
// The take is the keeper's alone: it reads the name from the daemon's
// pipe itself, sets the hostname, rewrites the files (which it opened
// while the sandbox waited, see keeperOpen), drops its
// capabilities with one capset (its only thread's), and tells the agent
// and the daemon itself. The namer's Go runtime sleeps in its poller
// through all of it: when the namer read the name and handed it on, and
// passed the keeper's answer back, the take's way had two more tasks
// woken in gVisor and eight more system calls, each a trip through the
// Sentry on the sandbox's one CPU. The keeper then waits for end of file
// from the daemon before it exits, for the reason the namer used to wait
// for it (see the package comment), and its exit, which closes the pipe
// the namer waits on, ends the namer.

// keeper is the namer's end of its keeper.
type keeper struct {
	pid   int
	stack []byte   // the keeper's, unmapped once it is reaped
	done  *os.File // end of file when the keeper exited (non-blocking)
}

// keeperJob is what the keeper's code reads: set before the fork, and
// never written after it by the namer. Arrays, not slices or strings, so
// that the keeper's code indexes memory it owns and allocates nothing.
var keeperJob struct {
	in, out, tell int               // the daemon's pipes and the agent's FIFO (-1: none)
	done, doneR   int               // the pipe the namer waits on: the keeper's end, the namer's
	name          [maxName + 2]byte // the name's line as read
	hostname      [maxName + 1]byte // /etc/hostname's content
	hosts         [len(hostsHead) + maxName + 1]byte
	paths         [2][maxPath]byte    // NUL-terminated
	files         [2]int              // paths opened by the keeper, while the sandbox waits
	openErrno     [2]uintptr          // their open's errno (0: open)
	hdr           unix.CapUserHeader  // capset's arguments: empty sets
	data          [2]unix.CapUserData //
	// What the keeper says: the daemon's lines (an error's is its step's
	// text, then the errno's digits and a newline) and the agent's.
	answer    [maxAnswer]byte
	steps     [stepCapabilities + 1][maxAnswer - 8]byte
	stepLen   [stepCapabilities + 1]int
	ok        [3]byte
	tellOK    [len(TellOK) + 1]byte
	tellError [len(TellError) + 1]byte
	tellGone  [len(TellGone) + 1]byte
}

// maxAnswer bounds the keeper's answer line to the daemon.
const maxAnswer = 64

// hostsHead is /etc/hosts up to the sandbox's name.
const hostsHead = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t"

// maxPath bounds the length of a file's path the keeper writes.
const maxPath = 256

// The steps the keeper names in an error's answer.
const (
	stepHostname byte = 1 + iota
	stepFirstFile
	stepSecondFile
	stepCapabilities
)

// stepTexts start the keeper's answer when a step fails.
var stepTexts = [...]string{
	stepHostname:     "error: setting the hostname: errno ",
	stepFirstFile:    "error: writing " + etcHostname + ": errno ",
	stepSecondFile:   "error: writing " + etcHosts + ": errno ",
	stepCapabilities: "error: dropping capabilities: errno ",
}

// keeperIO is where the keeper takes its name and says how the naming
// went: in and out are the daemon's pipes (stdin and stdout), tell the
// agent's FIFO (-1: none).
type keeperIO struct{ in, out, tell int }

// startKeeper forks the keeper, which will read the name from io.in and
// write /etc/hostname and /etc/hosts (paths, in that order). The namer
// must drop its own capabilities afterwards, and never read io.in.
func startKeeper(paths [2]string, io keeperIO) (*keeper, error) {
	for i, p := range paths {
		if len(p) >= maxPath {
			return nil, fmt.Errorf("path %q too long", p)
		}
		copy(keeperJob.paths[i][:], p)
		keeperJob.paths[i][len(p)] = 0
	}
	keeperJob.hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	copy(keeperJob.hosts[:], hostsHead)
	for step, text := range stepTexts {
		keeperJob.stepLen[step] = copy(keeperJob.steps[step][:], text)
	}
	copy(keeperJob.ok[:], "ok\n")
	copy(keeperJob.tellOK[:], TellOK+"\n")
	copy(keeperJob.tellError[:], TellError+"\n")
	copy(keeperJob.tellGone[:], TellGone+"\n")
	keeperJob.in, keeperJob.out, keeperJob.tell = io.in, io.out, io.tell
	var done [2]int
	// Non-blocking: the namer waits on its end in the runtime's poller;
	// the keeper never writes to its own.
	if err := unix.Pipe2(done[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	keeperJob.doneR, keeperJob.done = done[0], done[1]
	pid, stack, err := forkKeeper()
	unix.Close(done[1])
	if err != nil {
		unix.Close(done[0])
		return nil, fmt.Errorf("forking the keeper: %w", err)
	}
	return &keeper{pid: pid, stack: stack, done: os.NewFile(uintptr(done[0]), "keeper")}, nil
}

// keeperStack is the size of the keeper's stack: keeperMain and what it
// calls are nosplit, so they fit in a few hundred bytes.
const keeperStack = 64 << 10

// forkKeeper starts the keeper: a process of its own (its own
// credentials, descriptors and signal mask) that shares the namer's
// memory (CLONE_VM: nothing is copied, so neither side takes a
// copy-on-write fault for each page it writes later, which made a plain
// fork cost the take more than it saved) and runs keeperMain on a stack of
// its own. Every signal is blocked on the forking thread while it clones,
// so the keeper starts with all blocked and no Go signal handler ever runs
// in it; the namer's thread gets its mask back at once.
//
//go:norace
func forkKeeper() (int, []byte, error) {
	stack, err := unix.Mmap(-1, 0, keeperStack, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, nil, err
	}
	top := uintptr(unsafe.Pointer(&stack[len(stack)-1])) + 1
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	all, old := ^uint64(0), uint64(0)
	if _, _, errno := syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&all)), uintptr(unsafe.Pointer(&old)), 8, 0, 0); errno != 0 {
		unix.Munmap(stack)
		return 0, nil, errno
	}
	pid, errno := cloneKeeper(uintptr(unix.CLONE_VM|unix.SIGCHLD), top&^15)
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	if errno != 0 {
		unix.Munmap(stack)
		return 0, nil, syscall.Errno(errno)
	}
	return int(pid), stack, nil
}

// keeperMain is called from cloneKeeper's assembly only.
var _ = keeperMain

// keeperMain is the keeper. It runs on a stack the Go runtime does not
// know, in a process the runtime does not know: it must not enter the
// runtime at all (no allocation, no stack growth, no scheduling, no
// pointer writes), so it and everything it calls are nosplit and make raw
// system calls only, on memory set up before the clone, which the namer no
// longer writes.
//
//go:nosplit
//go:norace
//go:nocheckptr
func keeperMain() {
	j := &keeperJob
	rawCall(unix.SYS_CLOSE, uintptr(j.doneR), 0, 0)
	closeAllBut(&[4]int{j.in, j.out, j.tell, j.done})
	for i := range j.files {
		j.files[i], j.openErrno[i] = keeperOpen(&j.paths[i][0])
	}
	n := readLine(j.in, j.name[:])
	if n <= 0 || n > maxName {
		// No name: the sandbox was discarded, or the daemon went away.
		keeperSay(j.tell, j.tellGone[:])
		rawCall(unix.SYS_EXIT_GROUP, 1, 0, 0)
	}
	step, errno := byte(0), uintptr(0)
	if e := rawCall(unix.SYS_SETHOSTNAME, uintptr(unsafe.Pointer(&j.name[0])), uintptr(n), 0); e != 0 {
		step, errno = stepHostname, e
	}
	copy(j.hostname[:], j.name[:n])
	j.hostname[n] = '\n'
	copy(j.hosts[len(hostsHead):], j.name[:n])
	j.hosts[len(hostsHead)+n] = '\n'
	if step == 0 {
		if e := keeperRewrite(0, j.hostname[:n+1]); e != 0 {
			step, errno = stepFirstFile, e
		}
	}
	if step == 0 {
		if e := keeperRewrite(1, j.hosts[:len(hostsHead)+n+1]); e != 0 {
			step, errno = stepSecondFile, e
		}
	}
	// Always, whatever failed before: nothing that runs once the keeper
	// answered may hold CAP_SYS_ADMIN. A keeper that could not drop them
	// exits once it answered.
	capErrno := rawCall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&j.hdr)), uintptr(unsafe.Pointer(&j.data[0])), 0)
	if capErrno != 0 && step == 0 {
		step, errno = stepCapabilities, capErrno
	}
	// The agent first, as the namer did: the call it holds is the take's.
	code := uintptr(0)
	if step == 0 {
		keeperSay(j.tell, j.tellOK[:])
		rawWriteAll(j.out, j.ok[:])
	} else {
		code = 1
		keeperSay(j.tell, j.tellError[:])
		rawWriteAll(j.out, errorAnswer(step, errno))
	}
	if capErrno != 0 {
		rawCall(unix.SYS_EXIT_GROUP, 1, 0, 0)
	}
	for readLine(j.in, j.name[:]) > 0 {
	}
	rawCall(unix.SYS_EXIT_GROUP, code, 0, 0)
}

// keeperSay writes line to the agent's FIFO fd, if there is one, in one
// write (a line shorter than PIPE_BUF is never split or interleaved; the
// FIFO is non-blocking, and the agent holds it open for reading).
//
//go:nosplit
//go:norace
func keeperSay(fd int, line []byte) {
	if fd >= 0 {
		rawWriteAll(fd, line)
	}
}

// errorAnswer is the keeper's answer to the daemon when step failed with
// errno: the step's text, the errno in decimal, a newline.
//
//go:nosplit
//go:norace
func errorAnswer(step byte, errno uintptr) []byte {
	j := &keeperJob
	n := copy(j.answer[:], j.steps[step][:j.stepLen[step]])
	var digits [20]byte
	d := len(digits)
	for {
		d--
		digits[d] = byte('0' + errno%10)
		errno /= 10
		if errno == 0 {
			break
		}
	}
	n += copy(j.answer[n:], digits[d:])
	j.answer[n] = '\n'
	return j.answer[:n+1]
}

// rawCall makes a raw system call and returns its errno.
//
//go:nosplit
//go:norace
func rawCall(trap, a1, a2, a3 uintptr) uintptr {
	_, _, errno := syscall.RawSyscall(trap, a1, a2, a3)
	return uintptr(errno)
}

// closeAllBut closes every descriptor but those of keep (negative ones
// are none): the runtime's poller, the namer's pipes and anything else
// the namer holds, which the keeper has no use for.
//
//go:nosplit
//go:norace
func closeAllBut(keep *[4]int) {
	for i := 1; i < len(keep); i++ { // sort
		for k := i; k > 0 && keep[k] < keep[k-1]; k-- {
			keep[k], keep[k-1] = keep[k-1], keep[k]
		}
	}
	next := 0 // the lowest descriptor that may still be open
	for _, fd := range keep {
		if fd < next {
			continue // none, or kept twice
		}
		if fd > next {
			rawCall(unix.SYS_CLOSE_RANGE, uintptr(next), uintptr(fd-1), 0)
		}
		next = fd + 1
	}
	rawCall(unix.SYS_CLOSE_RANGE, uintptr(next), uintptr(^uint32(0)), 0)
}

// readLine reads into buf until a newline and returns the line's length
// without it: 0 at end of file, -1 on an error or a line that does not
// fit.
//
//go:nosplit
//go:norace
func readLine(fd int, buf []byte) int {
	got := 0
	for got < len(buf) {
		n, _, errno := syscall.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&buf[got])), uintptr(len(buf)-got))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1
		}
		if n == 0 {
			return 0
		}
		for i := got; i < got+int(n); i++ {
			if buf[i] == '\n' {
				return i
			}
		}
		got += int(n)
	}
	return -1
}

// keeperWrite replaces the content of the file at path (NUL-terminated)
// with data and returns the errno (writeFile's, and the keeper's).
//
//go:nosplit
//go:norace
func keeperWrite(path *byte, data []byte) uintptr {
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_TRUNC | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, _, errno := syscall.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(path)), uintptr(flags), 0o644, 0, 0)
	if errno != 0 {
		return uintptr(errno)
	}
	e := rawWriteAll(int(fd), data)
	if c := rawCall(unix.SYS_CLOSE, fd, 0, 0); c != 0 && e == 0 {
		e = c
	}
	return e
}

// keeperOpen opens the file at path (NUL-terminated) for the keeper to
// rewrite at the take (keeperRewrite), and returns its descriptor and the
// errno. O_NOFOLLOW as in keeperWrite. Opened while the sandbox waits, so
// that the take neither resolves the paths nor opens the files on the
// host (gVisor's directfs): the two opens with O_TRUNC were the
// costliest of the keeper's calls under runsc --strace (0.2-0.9 ms each,
// loaded).
//
//go:nosplit
//go:norace
func keeperOpen(path *byte) (int, uintptr) {
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, _, errno := syscall.RawSyscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(path)), uintptr(flags), 0o644, 0, 0)
	if errno != 0 {
		return -1, uintptr(errno)
	}
	return int(fd), 0
}

// keeperRewrite replaces the content of the keeper's file i (keeperOpen)
// with data, and returns the errno: the open's, if it failed.
//
//go:nosplit
//go:norace
func keeperRewrite(i int, data []byte) uintptr {
	j := &keeperJob
	if j.openErrno[i] != 0 {
		return j.openErrno[i]
	}
	fd := uintptr(j.files[i])
	for off := 0; off < len(data); {
		n, _, errno := syscall.RawSyscall6(unix.SYS_PWRITE64, fd, uintptr(unsafe.Pointer(&data[off])), uintptr(len(data)-off), uintptr(off), 0, 0)
		switch errno {
		case 0:
			off += int(n)
		case unix.EINTR:
		default:
			return uintptr(errno)
		}
	}
	return rawCall(unix.SYS_FTRUNCATE, fd, uintptr(len(data)), 0)
}

// rawWriteAll writes data to fd and returns the errno.
//
//go:nosplit
//go:norace
func rawWriteAll(fd int, data []byte) uintptr {
	for len(data) > 0 {
		n, _, errno := syscall.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)))
		switch errno {
		case 0:
			data = data[n:]
		case unix.EINTR:
		default:
			return uintptr(errno)
		}
	}
	return 0
}

// wait waits, asleep in the runtime's poller, until the keeper exited
// (end of file on its pipe), reaps it, and returns its exit status.
// Nothing of the namer runs on the take's way: the keeper exits only once
// the daemon closed its pipe, after the take. A nil keeper is none.
func (k *keeper) wait() int {
	if k == nil || k.pid == 0 {
		return 0
	}
	if rc, err := k.done.SyscallConn(); err == nil {
		io.Copy(io.Discard, rawio.Reader{RC: rc})
	}
	k.done.Close()
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(k.pid, &ws, 0, nil); err != unix.EINTR {
			break
		}
	}
	unix.Munmap(k.stack)
	k.pid = 0
	return ws.ExitStatus()
}

// kill ends the keeper at once and reaps it: for a namer that fails
// before the take, whose keeper must not wait on with CAP_SYS_ADMIN.
func (k *keeper) kill() {
	unix.Kill(k.pid, unix.SIGKILL)
	k.wait()
}
