// Package proctree finds and kills the processes below a process by walking
// /proc. The agent uses it to kill what one command started in a session
// shell without touching the shell itself or what earlier commands left
// running in the background.
//
// Why the tree is not enough: a process whose parent ends is re-parented
// to the nearest reaper (the agent, PID 1 or a child subreaper), out of
// the shell's tree. A command does it on purpose with (cmd &), and a
// parent killed while it forks does it by accident: the child it was
// forking is not in the listing the kill worked from, and outlives it.
// Such a process still has the shell's session id, which only setsid
// changes, so CommandProcs finds it among the reaper's children.
//
// It never waits on a process (that is the reaper's job) and never signals
// anything it has not just found below the given root (or, for a command,
// adopted from the root's session).
//
// Why pidfds: between reading /proc and sending the signal, a process can
// exit, be reaped, and its PID be given to an unrelated process. Each victim
// is opened as a pidfd first and its start time checked again through
// /proc; a signal sent through that pidfd can only reach the process that
// was checked.
package proctree

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TicksPerSecond is USER_HZ, the unit of the times in /proc/PID/stat. The
// kernel fixes it at 100 on every architecture Linux exports to user space
// through /proc; gVisor uses the same.
const TicksPerSecond = 100

// Proc is one process as seen in /proc/PID/stat.
type Proc struct {
	PID   int
	PPID  int
	SID   int    // session id
	State byte   // R, S, D, Z, T, ...
	Start uint64 // clock ticks since boot (CLOCK_BOOTTIME)
	// CPU is the processor time the process has used, user and system,
	// in clock ticks: the time it actually ran. gVisor counts a task's
	// time in the Sentry and in its own code, not the time it is stopped
	// or blocked.
	CPU uint64
}

// Now is the current time in the clock and unit of Proc.Start: a process
// started after a call to Now has Start >= the value it returned.
func Now() uint64 {
	return uint64(bootNanos()) / (1e9 / TicksPerSecond)
}

// At is what Now returned at t, a time.Now() reading of this process:
// Now less the time since t, on the monotonic clock Go's time.Now reads
// through the vDSO, which costs no system call (in gVisor either, where
// CLOCK_BOOTTIME's call is a trip through the Sentry). A session notes
// time.Now() on every command's way and asks for At only to kill the
// command's processes. The two clocks differ only by time the machine
// spent suspended since t (gVisor counts none).
func At(t time.Time) uint64 {
	ns := bootNanos() - time.Since(t).Nanoseconds()
	if ns <= 0 {
		return 0
	}
	return uint64(ns) / (1e9 / TicksPerSecond)
}

// bootNanos reads CLOCK_BOOTTIME in nanoseconds, 0 if it cannot (which
// filters nothing out: errs towards killing more). The call is raw (it
// returns at once): unix.ClockGettime would wake the Go runtime's monitor
// thread (see internal/agent/session's raw system calls).
func bootNanos() int64 {
	var ts unix.Timespec
	if _, _, e := unix.RawSyscall(unix.SYS_CLOCK_GETTIME, unix.CLOCK_BOOTTIME, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0
	}
	return ts.Nano()
}

// Descendants returns the live (non-zombie) processes below root, parents
// before their children. A direct child of root that started before since,
// and everything below it, is left out: it was started by an earlier
// command. Pass since 0 to get every descendant.
func Descendants(root int, since uint64) ([]Proc, error) {
	procs, err := list()
	if err != nil {
		return nil, err
	}
	return childrenOf(procs).below(root, since, nil), nil
}

// CommandProcs returns what a command of the session shell root started
// since since: Descendants(root, since), and the processes of root's
// session that this process (the reaper) adopted and that started since
// since, with everything below them (see the package comment). root must
// lead its own session, as a session shell does (setsid).
//
// One edge: an adopted process started since since may also have been
// started by an earlier command's background job, its parent since ended;
// it is returned with the command's.
func CommandProcs(root int, since uint64) ([]Proc, error) {
	procs, err := list()
	if err != nil {
		return nil, err
	}
	children := childrenOf(procs)
	out := children.below(root, since, nil)
	for _, c := range children[os.Getpid()] {
		if c.SID == root && c.PID != root && c.Start >= since {
			out = children.below(c.PID, 0, appendLive(out, c))
		}
	}
	return out, nil
}

// children maps a PID to the processes whose parent it is.
type children map[int][]Proc

func childrenOf(procs []Proc) children {
	m := make(children, len(procs))
	for _, p := range procs {
		m[p.PPID] = append(m[p.PPID], p)
	}
	return m
}

// below appends the live processes below root to out, parents before
// their children, leaving out root's direct children that started before
// since and everything below them.
func (m children) below(root int, since uint64, out []Proc) []Proc {
	queue := []int{root}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for _, c := range m[parent] {
			if parent == root && c.Start < since {
				continue
			}
			queue = append(queue, c.PID)
			out = appendLive(out, c)
		}
	}
	return out
}

func appendLive(out []Proc, p Proc) []Proc {
	if p.State == 'Z' {
		return out
	}
	return append(out, p)
}

// Kill sends SIGKILL to every process Descendants(root, since) returns and
// reports how many it signalled. Processes keep forking while they are
// being killed, so callers repeat Kill until it returns 0.
func Kill(root int, since uint64) (int, error) {
	victims, err := Descendants(root, since)
	if err != nil {
		return 0, err
	}
	return signalAll(victims, unix.SIGKILL), nil
}

// KillCommand is Kill of what CommandProcs(root, since) returns.
func KillCommand(root int, since uint64) (int, error) {
	victims, err := CommandProcs(root, since)
	if err != nil {
		return 0, err
	}
	return signalAll(victims, unix.SIGKILL), nil
}

// signalAll sends sig to each of procs still the process listed and
// reports how many it signalled.
func signalAll(procs []Proc, sig unix.Signal) int {
	n := 0
	for _, p := range procs {
		if signal(p, sig) {
			n++
		}
	}
	return n
}

// signal sends sig to p if p is still the process that was listed.
func signal(p Proc, sig unix.Signal) bool {
	fd, err := unix.PidfdOpen(p.PID, 0)
	if errors.Is(err, unix.ENOSYS) {
		// Kernels before 5.3: plain kill, with the small PID-reuse race
		// that implies.
		return unix.Kill(p.PID, sig) == nil
	}
	if err != nil {
		return false // gone
	}
	defer unix.Close(fd)
	now, err := stat(p.PID)
	if err != nil || now.Start != p.Start {
		return false // gone, and the PID already reused
	}
	return unix.PidfdSendSignal(fd, sig, nil, 0) == nil
}

func list() ([]Proc, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	procs := make([]Proc, 0, len(names))
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		p, err := stat(pid)
		if err != nil {
			continue // exited while we looked
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// Stat reads process pid's /proc/PID/stat.
func Stat(pid int) (Proc, error) { return stat(pid) }

func stat(pid int) (Proc, error) {
	var buf [1024]byte
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, err
	}
	n, err := f.Read(buf[:])
	f.Close()
	if err != nil {
		return Proc{}, err
	}
	return parseStat(pid, buf[:n])
}

// parseStat parses a /proc/PID/stat line. The command name (field 2) is in
// parentheses and may itself contain spaces and parentheses, so the fields
// are counted from the last ')'.
func parseStat(pid int, line []byte) (Proc, error) {
	i := bytes.LastIndexByte(line, ')')
	if i < 0 || i+2 >= len(line) {
		return Proc{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := bytes.Fields(line[i+2:])
	// fields[0] is field 3 (state); ppid is field 4, session field 6,
	// utime and stime fields 14 and 15, starttime field 22.
	if len(fields) < 20 || len(fields[0]) != 1 {
		return Proc{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, err1 := strconv.Atoi(string(fields[1]))
	sid, err2 := strconv.Atoi(string(fields[3]))
	utime, err3 := strconv.ParseUint(string(fields[11]), 10, 64)
	stime, err4 := strconv.ParseUint(string(fields[12]), 10, 64)
	start, err5 := strconv.ParseUint(string(fields[19]), 10, 64)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return Proc{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return Proc{PID: pid, PPID: ppid, SID: sid, State: fields[0][0], Start: start, CPU: utime + stime}, nil
}
