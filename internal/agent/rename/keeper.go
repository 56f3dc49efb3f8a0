package rename

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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
// sandbox waits in the pool the namer forks the keeper, a copy of itself
// that runs only the raw system calls below and never returns to the Go
// runtime, and then drops its own capabilities, off the take's way. On
// the take it hands the keeper the name; the keeper sets the hostname,
// writes the files and drops its capabilities with one capset (its only
// thread's), and answers. It then waits for end of file from the namer
// before it exits, for the reason the namer waits for the daemon's.

// keeper is the namer's end of its keeper.
type keeper struct {
	pid    int
	stack  []byte // the keeper's, unmapped once it is reaped
	toward int    // the keeper's name pipe, written by the namer
	back   int    // the keeper's answers, read by the namer
}

// keeperJob is what the keeper's code reads: set before the fork, so the
// keeper's copy of memory holds it, and never written after it by the
// namer. Arrays, not slices or strings, so that the keeper's code indexes
// memory it owns and allocates nothing.
var keeperJob struct {
	in, out      int // the keeper's ends of the two pipes
	toward, back int // the namer's ends, which the keeper closes
	answer       [2]byte
	name         [maxName + 2]byte // the name's line as read
	hostname     [maxName + 1]byte // /etc/hostname's content
	hosts        [len(hostsHead) + maxName + 1]byte
	paths        [2][maxPath]byte    // NUL-terminated
	hdr          unix.CapUserHeader  // capset's arguments: empty sets
	data         [2]unix.CapUserData //
}

// hostsHead is /etc/hosts up to the sandbox's name.
const hostsHead = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t"

// maxPath bounds the length of a file's path the keeper writes.
const maxPath = 256

// The steps the keeper answers about, in its answer's first byte; the
// other byte is the step's errno (at most 255 on Linux), 0 for success.
const (
	stepHostname byte = 1 + iota
	stepFirstFile
	stepSecondFile
	stepCapabilities
)

// startKeeper forks the keeper, which will write /etc/hostname and
// /etc/hosts (paths, in that order). The namer must drop its own
// capabilities afterwards: the keeper is the only one to keep them.
func startKeeper(paths [2]string) (*keeper, error) {
	for i, p := range paths {
		if len(p) >= maxPath {
			return nil, fmt.Errorf("path %q too long", p)
		}
		copy(keeperJob.paths[i][:], p)
		keeperJob.paths[i][len(p)] = 0
	}
	keeperJob.hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
	var toward, back [2]int
	if err := unix.Pipe2(toward[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	if err := unix.Pipe2(back[:], unix.O_CLOEXEC); err != nil {
		unix.Close(toward[0])
		unix.Close(toward[1])
		return nil, err
	}
	keeperJob.in, keeperJob.out = toward[0], back[1]
	copy(keeperJob.hosts[:], hostsHead)
	pid, stack, err := forkKeeper(toward[1], back[0])
	unix.Close(toward[0])
	unix.Close(back[1])
	if err != nil {
		unix.Close(toward[1])
		unix.Close(back[0])
		return nil, fmt.Errorf("forking the keeper: %w", err)
	}
	return &keeper{pid: pid, stack: stack, toward: toward[1], back: back[0]}, nil
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
func forkKeeper(toward, back int) (int, []byte, error) {
	stack, err := unix.Mmap(-1, 0, keeperStack, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, nil, err
	}
	keeperJob.toward, keeperJob.back = toward, back
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
	rawCall(unix.SYS_CLOSE, uintptr(j.toward), 0, 0)
	rawCall(unix.SYS_CLOSE, uintptr(j.back), 0, 0)
	closeAllBut(j.in, j.out)
	n := readLine(j.in, j.name[:])
	if n <= 0 || n > maxName {
		rawCall(unix.SYS_EXIT_GROUP, 0, 0, 0) // no name: the sandbox was discarded
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
		if e := keeperWrite(&j.paths[0][0], j.hostname[:n+1]); e != 0 {
			step, errno = stepFirstFile, e
		}
	}
	if step == 0 {
		if e := keeperWrite(&j.paths[1][0], j.hosts[:len(hostsHead)+n+1]); e != 0 {
			step, errno = stepSecondFile, e
		}
	}
	// Always, whatever failed before: nothing that runs once the namer
	// answered may hold CAP_SYS_ADMIN. A keeper that could not drop them
	// exits once it answered.
	capErrno := rawCall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&j.hdr)), uintptr(unsafe.Pointer(&j.data[0])), 0)
	if capErrno != 0 && step == 0 {
		step, errno = stepCapabilities, capErrno
	}
	j.answer = [2]byte{step, byte(errno)}
	rawWriteAll(j.out, j.answer[:])
	if capErrno != 0 {
		rawCall(unix.SYS_EXIT_GROUP, 1, 0, 0)
	}
	for readLine(j.in, j.name[:]) > 0 {
	}
	rawCall(unix.SYS_EXIT_GROUP, 0, 0, 0)
}

// rawCall makes a raw system call and returns its errno.
//
//go:nosplit
//go:norace
func rawCall(trap, a1, a2, a3 uintptr) uintptr {
	_, _, errno := syscall.RawSyscall(trap, a1, a2, a3)
	return uintptr(errno)
}

// closeAllBut closes every descriptor but a and b (the daemon's pipes, the
// agent's FIFO, the runtime's poller: the keeper holds none of them).
//
//go:nosplit
//go:norace
func closeAllBut(a, b int) {
	if a > b {
		a, b = b, a
	}
	if a > 0 {
		rawCall(unix.SYS_CLOSE_RANGE, 0, uintptr(a-1), 0)
	}
	if b > a+1 {
		rawCall(unix.SYS_CLOSE_RANGE, uintptr(a+1), uintptr(b-1), 0)
	}
	rawCall(unix.SYS_CLOSE_RANGE, uintptr(b+1), uintptr(^uint32(0)), 0)
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

// name hands the keeper the name and waits for its answer, with raw
// system calls (a blocking read: the namer has nothing else to do, and it
// does not wake the runtime's monitor thread).
func (k *keeper) name(name string) error {
	if err := rawWrite(k.toward, []byte(name+"\n")); err != nil {
		return fmt.Errorf("handing the keeper the name: %w", err)
	}
	var answer [2]byte
	got := 0
	for got < len(answer) {
		n, _, errno := unix.RawSyscall(unix.SYS_READ, uintptr(k.back), uintptr(unsafe.Pointer(&answer[got])), uintptr(len(answer)-got))
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return fmt.Errorf("reading the keeper's answer: %w", errno)
		case n == 0:
			return fmt.Errorf("the keeper exited without an answer")
		}
		got += int(n)
	}
	errno := syscall.Errno(answer[1])
	switch answer[0] {
	case 0:
		return nil
	case stepHostname:
		return fmt.Errorf("setting the hostname: %w", errno)
	case stepFirstFile:
		return fmt.Errorf("writing %s: %w", etcHostname, errno)
	case stepSecondFile:
		return fmt.Errorf("writing %s: %w", etcHosts, errno)
	case stepCapabilities:
		return fmt.Errorf("dropping capabilities: %w", errno)
	}
	return fmt.Errorf("the keeper answered %v", answer)
}

// release ends the keeper (end of file on its name pipe) and reaps it,
// once. A nil keeper is none.
func (k *keeper) release() {
	if k == nil || k.pid == 0 {
		return
	}
	unix.Close(k.toward)
	unix.Close(k.back)
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(k.pid, &ws, 0, nil); err != unix.EINTR {
			break
		}
	}
	unix.Munmap(k.stack)
	k.pid = 0
}
