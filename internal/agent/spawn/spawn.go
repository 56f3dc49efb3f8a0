// Package spawn is the wrapper through which the agent starts every user
// program: the agent re-executes itself as `sandbox-agent spawn [flags] --
// PROG ARGS...`, and the wrapper moves itself into the sandbox's user
// cgroups, gives up the agent's OOM protection, and then replaces itself
// with PROG (execve, same PID).
//
// Why a re-exec and not a fork hook: Go cannot run code between fork and
// exec, and the cgroup move must happen before PROG runs its first
// instruction, or a fork bomb or a memory hog could start in the agent's
// cgroup and bring the agent down with it. A process that writes its own PID
// to cgroup.procs moves itself, and its children follow. The one exception
// is the agent's boot shell, which runs nothing of anyone's before its
// first line and is moved by the agent (Adopt) before it gets that line:
// see session.WarmAtBoot.
//
// With --uid the wrapper then drops root: supplementary groups, group and
// user, in that order (setuid last, because it takes the right to change
// the others). The cgroup move must come first: a non-root process may not
// write the cgroup's cgroup.procs.
//
// A spare (--request-fd) is a wrapper started ahead of need: it joins the
// cgroups and resets its OOM score at once, then waits for a Request (what
// to run, as whom, where, with which environment) on that descriptor, and
// goes on from there as a wrapper started for it would. The Go runtime's
// start-up, which costs milliseconds (tens on a loaded host) in a binary
// of this size, is then paid before the process is asked for, not while a
// caller waits for it.
//
// Before anything else the wrapper resets the signals its process ignores
// and unblocks every signal (ResetSignals): PROG starts as from a clean
// init, whatever the daemon, the runtime or the agent inherited.
//
// The wrapper must never outlive the exec or do anything after it: it only
// prepares the process and becomes PROG. It never logs; errors go to one
// file descriptor (stderr unless --errfd says otherwise) and become its exit
// status.
package spawn

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Arg is the sub-command name that selects the wrapper in the agent binary.
const Arg = "spawn"

// DefaultCgroupRoot is where the daemon bind-mounts the cgroup.procs file
// of the sandbox's user sub-cgroup, one directory per hierarchy (cgroup
// v2: one; v1: several), never the sub-cgroup's own directory.
const DefaultCgroupRoot = "/.sandboxd/cgroup"

// Exit statuses of a wrapper that failed before PROG ran.
const (
	// ExitSetup: joining the user cgroup or resetting oom_score_adj failed.
	// The wrapper fails closed: user code never runs outside its cgroup.
	ExitSetup = 125
	// ExitExec: PROG could not be found or executed (as in sh).
	ExitExec = 127
)

// Options are the wrapper's flags.
type Options struct {
	// CgroupRoot holds one directory per cgroup hierarchy, each with a
	// cgroup.procs file. A missing root or entry is skipped.
	CgroupRoot string
	// ErrFD is where errors are written; default 2.
	ErrFD int
	// Argv0 replaces PROG as argv[0] (bash reports its errors as "bash:").
	Argv0 string
	// CloseErrFD marks ErrFD close-on-exec, so that a starter reading it
	// sees EOF once PROG runs, and an error message if it never does.
	CloseErrFD bool
	// User, when UID is not nil, is who PROG runs as.
	UID, GID *int
	// RequestFD, when not 0, makes the wrapper a spare: PROG, its user,
	// directory and environment come as a Request on this descriptor
	// (read to EOF), and the command line names no PROG.
	RequestFD int
}

// Request is what a spare runs.
type Request struct {
	// Argv is PROG and its arguments.
	Argv []string `json:"argv"`
	// Env is PROG's whole environment.
	Env []string `json:"env"`
	// Dir is the working directory, entered before privileges are dropped
	// (as os.StartProcess enters it before the wrapper runs); "" keeps /.
	Dir string `json:"dir,omitempty"`
	// UID and GID, when not nil, are who PROG runs as.
	UID *int `json:"uid,omitempty"`
	GID *int `json:"gid,omitempty"`
}

// maxRequest bounds a Request: a command and an environment, each bounded
// by the agent's API far below this.
const maxRequest = 16 << 20

// WorkDirError is what a start that cannot enter its working directory
// reports.
const WorkDirError = "the working directory does not exist or cannot be entered"

// Argv returns the command line that runs prog with args through the
// wrapper of the agent binary self.
func Argv(self string, o Options, prog string, args ...string) []string {
	argv := []string{self, Arg}
	if o.CgroupRoot != "" {
		argv = append(argv, "--cgroup-root", o.CgroupRoot)
	}
	if o.ErrFD != 0 {
		argv = append(argv, "--errfd", strconv.Itoa(o.ErrFD))
	}
	if o.Argv0 != "" {
		argv = append(argv, "--argv0", o.Argv0)
	}
	if o.CloseErrFD {
		argv = append(argv, "--close-errfd")
	}
	if o.UID != nil && o.GID != nil {
		argv = append(argv, "--uid", strconv.Itoa(*o.UID), "--gid", strconv.Itoa(*o.GID))
	}
	if o.RequestFD != 0 {
		return append(argv, "--request-fd", strconv.Itoa(o.RequestFD))
	}
	argv = append(argv, "--", prog)
	return append(argv, args...)
}

// SpareArgv returns the command line of a spare of the agent binary self,
// which reads its Request from o.RequestFD.
func SpareArgv(self string, o Options) []string {
	if o.RequestFD == 0 {
		panic("spawn: SpareArgv needs a RequestFD")
	}
	return Argv(self, o, "")
}

// WriteRequest hands a spare what to run. The caller closes w after it.
func WriteRequest(w io.Writer, req Request) error {
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// Main runs the wrapper with the arguments after "spawn". It never returns.
func Main(args []string) {
	// The thread that clears the signal mask is the one that executes
	// PROG: locked to it from here on.
	runtime.LockOSThread()
	o, argv, err := parse(args)
	if err != nil {
		fail(2, ExitSetup, err)
	}
	if _, err := ResetSignals(); err != nil {
		fail(o.ErrFD, ExitSetup, err)
	}
	if err := Prepare(o.CgroupRoot, "/proc/self/oom_score_adj"); err != nil {
		fail(o.ErrFD, ExitSetup, err)
	}
	env := os.Environ()
	if o.RequestFD != 0 {
		if argv, env, err = awaitRequest(&o); err != nil {
			fail(o.ErrFD, ExitSetup, err)
		}
	}
	if o.UID != nil {
		if err := DropPrivileges(*o.UID, *o.GID); err != nil {
			fail(o.ErrFD, ExitSetup, err)
		}
	}
	if o.CloseErrFD {
		syscall.CloseOnExec(o.ErrFD)
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		// Resolve against the PATH PROG will see, as execvp does.
		searchPath, _ := LookupEnv(env, "PATH")
		os.Setenv("PATH", searchPath)
		if path, err = exec.LookPath(path); err != nil {
			fail(o.ErrFD, ExitExec, err)
		}
	}
	if o.Argv0 != "" {
		argv[0] = o.Argv0
	}
	err = syscall.Exec(path, argv, env)
	fail(o.ErrFD, ExitExec, fmt.Errorf("exec %s: %w", path, err))
}

// awaitRequest makes the process a spare until its Request arrives, then
// enters the request's directory and takes its user into o. While it
// waits it is not dumpable, so no process of the sandbox can trace it and
// change what the next process runs.
func awaitRequest(o *Options) ([]string, []string, error) {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return nil, nil, fmt.Errorf("spawn: prctl: %w", errno)
	}
	f := os.NewFile(uintptr(o.RequestFD), "request")
	data, err := io.ReadAll(io.LimitReader(f, maxRequest))
	f.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("spawn: reading the request: %w", err)
	}
	var req Request
	if err := json.Unmarshal(data, &req); err != nil || len(req.Argv) == 0 {
		return nil, nil, errors.New("spawn: the spare got no request")
	}
	if req.Dir != "" {
		if err := syscall.Chdir(req.Dir); err != nil {
			return nil, nil, errors.New(WorkDirError)
		}
	}
	if req.UID != nil && req.GID != nil {
		o.UID, o.GID = req.UID, req.GID
	}
	return req.Argv, req.Env, nil
}

// LookupEnv returns the value of the variable name in env, a process's
// environment as execve takes it: the last NAME=value, as a program
// reading it finds it; false when there is none.
func LookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func parse(args []string) (Options, []string, error) {
	var o Options
	set := flag.NewFlagSet(Arg, flag.ContinueOnError)
	set.SetOutput(discard{})
	set.StringVar(&o.CgroupRoot, "cgroup-root", DefaultCgroupRoot, "")
	set.IntVar(&o.ErrFD, "errfd", 2, "")
	set.StringVar(&o.Argv0, "argv0", "", "")
	set.BoolVar(&o.CloseErrFD, "close-errfd", false, "")
	set.IntVar(&o.RequestFD, "request-fd", 0, "")
	uid := set.Int("uid", -1, "")
	gid := set.Int("gid", -1, "")
	if err := set.Parse(args); err != nil {
		return o, nil, fmt.Errorf("spawn: %w", err)
	}
	if *uid >= 0 {
		if *gid < 0 {
			return o, nil, errors.New("spawn: --uid needs --gid")
		}
		o.UID, o.GID = uid, gid
	}
	if o.RequestFD != 0 {
		if set.NArg() != 0 {
			return o, nil, errors.New("spawn: a spare (--request-fd) takes no PROG")
		}
		return o, nil, nil
	}
	if set.NArg() == 0 {
		return o, nil, errors.New("spawn: usage: spawn [--cgroup-root DIR] [--errfd N] [--argv0 NAME] -- PROG [ARGS...]")
	}
	return o, set.Args(), nil
}

// Prepare moves the calling process into every user cgroup under
// cgroupRoot and sets its oom_score_adj to 0. The agent may run with a
// negative score so that the OOM killer never picks it; user code must not
// inherit that.
func Prepare(cgroupRoot, oomScoreAdj string) error {
	return prepare(cgroupRoot, strconv.Itoa(os.Getpid()), oomScoreAdj)
}

// Adopt does for the process pid, a child of the caller that has not run
// anything it was not told to yet, what Prepare does for the caller: it
// moves pid into every user cgroup under cgroupRoot and sets its
// oom_score_adj to 0. The agent's boot shell starts without the wrapper
// and is adopted before it reads its first line (session.WarmAtBoot).
// The caller must be root or pid's user (cgroup v1 lets no one else move
// a process).
func Adopt(cgroupRoot string, pid int) error {
	return prepare(cgroupRoot, strconv.Itoa(pid), fmt.Sprintf("/proc/%d/oom_score_adj", pid))
}

func prepare(cgroupRoot, pid, oomScoreAdj string) error {
	procs, err := filepath.Glob(filepath.Join(cgroupRoot, "*", "cgroup.procs"))
	if err != nil {
		return fmt.Errorf("spawn: listing cgroups: %w", err)
	}
	for _, p := range procs {
		// O_TRUNC and no O_CREAT: a cgroup file is written, never created.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone between the glob and the open
		}
		if err == nil {
			_, err = f.WriteString(pid)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("spawn: joining cgroup %s: %w", filepath.Dir(p), err)
		}
	}
	if err := os.WriteFile(oomScoreAdj, []byte("0"), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spawn: resetting oom_score_adj: %w", err)
	}
	return nil
}

// Credential is the user a program started without the wrapper runs as:
// uid and gid, with gid as its only supplementary group, as
// DropPrivileges leaves the wrapper.
func Credential(uid, gid int) *syscall.Credential {
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}}
}

// DropPrivileges makes the calling process (every thread of it: Go's
// syscall package applies set*id to all threads) run as uid and gid, with
// gid as its only supplementary group.
func DropPrivileges(uid, gid int) error {
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("spawn: setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("spawn: setgid %d: %w", gid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("spawn: setuid %d: %w", uid, err)
	}
	return nil
}

func fail(fd, code int, err error) {
	msg := err.Error() + "\n"
	syscall.Write(fd, []byte(msg))
	os.Exit(code)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// DefaultShell is the shell sessions and processes run in: bash, or sh in
// images that have no bash.
func DefaultShell() string {
	if _, err := os.Stat("/bin/bash"); err == nil {
		return "/bin/bash"
	}
	return "/bin/sh"
}
