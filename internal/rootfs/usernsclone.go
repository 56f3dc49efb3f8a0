package rootfs

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A user namespace owned by a range's root, made without starting a
// program. unshare(1) and cat(1) (userNSCommand) are two programs linked
// at run time, each mapped, linked and started for nothing but one
// unshare(2): about 9.6 ms of CPU time per namespace on a 2-CPU PVM guest
// (where a page fault is dear), spent once per sandbox start with a user
// namespace, ahead of it or on its way.
//
// The maker instead is a process of one thread that shares the daemon's
// memory (CLONE_VM: nothing is copied) and runs only the raw system calls
// of userNSMakerMain on a stack of its own, as the agent's keeper does
// (internal/agent/rename): it closes every descriptor but its two pipes'
// ends, takes r's root's credentials (no supplementary groups) keeping
// CAP_SYS_ADMIN alone, as userNSCommand's unshare(1) does (for hosts that
// let only privileged users make user namespaces), makes itself (and so
// the memory it shares: keepDumpable) undumpable, unshares a user
// namespace, which is then owned by r's root, answers on one pipe and
// waits for end of file on the other. It never runs anything else, and
// once it has unshared it holds no capability on the host. The daemon
// writes the ID maps, opens the namespace, closes its end of the second
// pipe and reaps the maker, which it cloned with no exit signal (a
// process only a wait with __WALL reaps) so that nothing else reaps it.

// makerJob is what the maker's code reads: set before the clone, and not
// written again until the maker is reaped (userNSMakerMu). Plain values,
// so that the maker's code allocates nothing and writes no pointer.
var makerJob userNSMakerJob

type userNSMakerJob struct {
	id          uintptr // the range's root: host UID and GID
	ready, hold int     // the maker's ends of its pipes: it answers on ready, waits on hold
	hdr         unix.CapUserHeader
	caps        [2]unix.CapUserData // CAP_SYS_ADMIN, permitted and effective
}

// userNSMakerMu lets one maker at a time read makerJob.
var userNSMakerMu sync.Mutex

// makerStackSize is the size of the maker's stack: userNSMakerMain and
// what it calls are nosplit, so they fit in a few hundred bytes.
const makerStackSize = 64 << 10

// The steps the maker answers a failure of (its answer: the step, the errno).
const (
	makerSetgroups = 1 + iota
	makerSetgid
	makerKeepCaps
	makerSetuid
	makerDumpable
	makerCapset
	makerUnshare
)

var makerStepNames = [...]string{
	makerSetgroups: "dropping supplementary groups",
	makerSetgid:    "setting the group",
	makerKeepCaps:  "keeping capabilities",
	makerSetuid:    "setting the user",
	makerDumpable:  "making itself undumpable",
	makerCapset:    "keeping CAP_SYS_ADMIN",
	makerUnshare:   "unsharing a user namespace",
}

// openUserNSByClone is OpenUserNS by a maker process (above); ok is false
// where there is none (not amd64), and the caller then starts unshare(1).
func (r IDRange) openUserNSByClone() (f *os.File, ok bool, err error) {
	userNSMakerMu.Lock()
	defer userNSMakerMu.Unlock()
	var ready, hold [2]int
	if err := unix.Pipe2(ready[:], unix.O_CLOEXEC); err != nil {
		return nil, true, err
	}
	defer unix.Close(ready[0])
	if err := unix.Pipe2(hold[:], unix.O_CLOEXEC); err != nil {
		unix.Close(ready[1])
		return nil, true, err
	}
	holdW := hold[1] // closed before the maker is reaped: its end of file
	makerJob.id = uintptr(r.Base)
	makerJob.ready, makerJob.hold = ready[1], hold[0]
	makerJob.hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	makerJob.caps[0] = unix.CapUserData{Effective: 1 << unix.CAP_SYS_ADMIN, Permitted: 1 << unix.CAP_SYS_ADMIN}
	defer keepDumpable()()
	pid, stack, err := forkUserNSMaker()
	unix.Close(ready[1])
	unix.Close(hold[0])
	if err != nil {
		unix.Close(holdW)
		if errors.Is(err, unix.ENOSYS) {
			return nil, false, nil
		}
		return nil, true, fmt.Errorf("starting a process for a new user namespace: %w", err)
	}
	defer reapUserNSMaker(pid, stack, holdW)
	if err := readMakerAnswer(ready[0], r); err != nil {
		return nil, true, err
	}
	f, err = openMadeUserNS(pid, r)
	return f, true, err
}

// keepDumpable returns a function that gives the daemon back the
// dumpable flag it has now. The flag belongs to the memory the maker
// shares, and its change of UID, then its own prctl, clear it: while the
// maker lives no process but a privileged one may trace it or the daemon
// (or read their /proc files that need as much), and once it is reaped
// the daemon is as it was.
func keepDumpable() func() {
	was, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil || (was != 0 && was != 1) {
		return func() {}
	}
	return func() { unix.Prctl(unix.PR_SET_DUMPABLE, uintptr(was), 0, 0, 0) }
}

// forkUserNSMaker clones the maker with every signal blocked on the
// cloning thread, so that the maker starts with all blocked and no Go
// signal handler ever runs in it; the thread gets its mask back at once.
//
//go:norace
func forkUserNSMaker() (int, []byte, error) {
	stack, err := unix.Mmap(-1, 0, makerStackSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
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
	pid, errno := cloneUserNSMaker(uintptr(unix.CLONE_VM), top&^15) // no exit signal
	syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	if errno != 0 {
		unix.Munmap(stack)
		return 0, nil, syscall.Errno(errno)
	}
	return int(pid), stack, nil
}

// reapUserNSMaker ends the maker (closing hold, the writer of the pipe
// it waits on), reaps it and unmaps its stack.
func reapUserNSMaker(pid int, stack []byte, hold int) {
	unix.Close(hold)
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != unix.EINTR {
			break
		}
	}
	unix.Munmap(stack)
}

// readMakerAnswer reads the maker's answer: a zero step, or the step
// that failed and its errno. End of file is a maker that died first.
func readMakerAnswer(fd int, r IDRange) error {
	var answer [2]byte
	got := 0
	for got < len(answer) {
		n, err := unix.Read(fd, answer[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("making a user namespace: reading its maker's answer: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("making a user namespace as host UID %d: its maker exited without an answer", r.Base)
		}
		got += n
	}
	if step := int(answer[0]); step != 0 {
		name := "an unknown step"
		if step < len(makerStepNames) {
			name = makerStepNames[step]
		}
		return fmt.Errorf("making a user namespace as host UID %d: %s: %w", r.Base, name, syscall.Errno(answer[1]))
	}
	return nil
}

// openMadeUserNS writes the ID maps of the user namespace process pid
// made and opens it.
func openMadeUserNS(pid int, r IDRange) (*os.File, error) {
	proc := "/proc/" + strconv.Itoa(pid)
	idMap := []byte(fmt.Sprintf("0 %d %d\n", r.Base, IDRangeSize))
	for _, f := range []string{"uid_map", "gid_map"} {
		if err := os.WriteFile(proc+"/"+f, idMap, 0); err != nil {
			return nil, fmt.Errorf("writing the user namespace's %s: %w", f, err)
		}
	}
	f, err := os.Open(proc + "/ns/user")
	if err != nil {
		return nil, fmt.Errorf("opening the ID map's user namespace: %w", err)
	}
	return f, nil
}

// userNSMakerMain is called from cloneUserNSMaker's assembly only.
var _ = userNSMakerMain

// userNSMakerMain is the maker. It runs on a stack the Go runtime does
// not know, in a process the runtime does not know: it must not enter
// the runtime at all (no allocation, no stack growth, no scheduling, no
// pointer writes), so it and everything it calls are nosplit and make raw
// system calls only, on memory set up before the clone.
//
//go:nosplit
//go:norace
//go:nocheckptr
func userNSMakerMain() {
	j := &makerJob
	ready, hold := j.ready, j.hold
	makerCloseAllBut(ready, hold)
	var answer [2]byte
	step, errno := makerSteps(j)
	answer[0], answer[1] = byte(step), byte(errno)
	for {
		_, _, e := syscall.RawSyscall(unix.SYS_WRITE, uintptr(ready), uintptr(unsafe.Pointer(&answer[0])), 2)
		if e != unix.EINTR {
			break
		}
	}
	if step != 0 {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, 1, 0, 0)
	}
	var buf [1]byte
	for {
		n, _, e := syscall.RawSyscall(unix.SYS_READ, uintptr(hold), uintptr(unsafe.Pointer(&buf[0])), 1)
		if e != unix.EINTR && (e != 0 || n == 0) {
			break
		}
	}
	syscall.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
}

// makerSteps takes the range root's credentials and unshares a user
// namespace; it returns the step that failed and its errno, or zeros.
//
//go:nosplit
//go:norace
//go:nocheckptr
func makerSteps(j *userNSMakerJob) (int, uintptr) {
	if _, _, e := syscall.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return makerSetgroups, uintptr(e)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SETRESGID, j.id, j.id, j.id); e != 0 {
		return makerSetgid, uintptr(e)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0); e != 0 {
		return makerKeepCaps, uintptr(e)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_SETRESUID, j.id, j.id, j.id); e != 0 {
		return makerSetuid, uintptr(e)
	}
	// Its memory is the daemon's: no process of r's root may trace it,
	// even on a host whose fs.suid_dumpable let the UID change above
	// leave it dumpable (the daemon's own flag: userNSMakerDumpable).
	if _, _, e := syscall.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0, 0); e != 0 {
		return makerDumpable, uintptr(e)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&j.hdr)), uintptr(unsafe.Pointer(&j.caps[0])), 0); e != 0 {
		return makerCapset, uintptr(e)
	}
	if _, _, e := syscall.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWUSER, 0, 0); e != 0 {
		return makerUnshare, uintptr(e)
	}
	return 0, 0
}

// makerCloseAllBut closes every descriptor but a and b: the daemon's
// sockets, pipes and files, which the maker has no use for.
//
//go:nosplit
//go:norace
func makerCloseAllBut(a, b int) {
	if a > b {
		a, b = b, a
	}
	if a > 0 {
		syscall.RawSyscall(unix.SYS_CLOSE_RANGE, 0, uintptr(a-1), 0)
	}
	if b > a+1 {
		syscall.RawSyscall(unix.SYS_CLOSE_RANGE, uintptr(a+1), uintptr(b-1), 0)
	}
	syscall.RawSyscall(unix.SYS_CLOSE_RANGE, uintptr(b+1), uintptr(^uint32(0)), 0)
}
