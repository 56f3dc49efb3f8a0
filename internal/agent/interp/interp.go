// Package interp owns the agent's code contexts: long-lived Python and
// Node.js interpreter processes inside the sandbox whose state (variables,
// imports, functions) persists from one run of code to the next. It starts
// the interpreters through the spawn wrapper (so they live in the user
// cgroup), talks to a small driver program in each over pipes, streams what
// the code prints and displays as it happens, interrupts runs at their
// timeout, and tells a crashed interpreter apart from a finished run.
//
// It knows nothing of HTTP or of the wire format: the agent edge turns
// requests into Run calls and the Sink's calls into events. It never waits
// on a process itself (the reaper does) and never logs code, environment
// values or output.
//
// The drivers (drivers/driver.py, drivers/driver.js) are embedded in the
// agent binary and written into the agent's private run directory. Each
// interpreter gets six file descriptors: 0 is /dev/null, 1 and 2 are pipes
// carrying the user code's stdout and stderr (so the output of
// subprocesses and C extensions is caught too), 3 carries requests and 4
// replies, both as frames (a 4-byte big-endian length, then JSON), and 5
// acks. Three goroutines per interpreter read 1, 2 and 4, parked in Go's
// poller (no OS thread per interpreter: the agent's cgroup keeps only a
// small reserve of tasks).
//
// Why acks: output and frames travel on different pipes, so the order in
// which the pump reads them is not the order in which they were written.
// The driver flushes stdout and stderr before it writes a frame, and the
// pump drains both pipes before it hands a frame on: so nothing printed
// before a result is read after it. After a result or error frame the
// driver waits for a one-byte ack, which the pump sends once it has handed
// the frame on: so nothing printed after a result is read before it.
//
// Why SIGINT and not a kill for timeouts: a run that passes its timeout
// should lose only itself, not the context's state. Python turns SIGINT
// into KeyboardInterrupt in the running cell; Node.js stops the running
// script (breakOnSigint). Only when the interpreter does not come back
// within KillGrace is the process tree killed, and the context is then
// terminated.
package interp

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
)

// Language is the language of a context.
type Language string

const (
	Python     Language = "python"
	JavaScript Language = "javascript"
	TypeScript Language = "typescript"
)

// Valid reports whether l is a language this package runs.
func (l Language) Valid() bool {
	return l == Python || l == JavaScript || l == TypeScript
}

// runtime is the interpreter family of a language: TypeScript runs in
// Node.js after transpiling.
func (l Language) runtime() Language {
	if l == TypeScript {
		return JavaScript
	}
	return l
}

// Errors. The agent edge maps each to a code.
var (
	ErrNotFound   = errors.New("no such code context")
	ErrLimit      = errors.New("too many code contexts")
	ErrBusy       = errors.New("too many runs queued on the code context")
	ErrClosed     = errors.New("code interpreter shut down")
	ErrTerminated = errors.New("the code context's interpreter is gone")
	ErrLanguage   = errors.New("the run's language does not match the context's")
)

// NotAvailableError says that a language's runtime is missing from the
// sandbox's image. Hint says what to install.
type NotAvailableError struct {
	Language Language
	Reason   string
	Hint     string
}

func (e *NotAvailableError) Error() string {
	return fmt.Sprintf("%s is not available in this sandbox: %s; %s", e.Language, e.Reason, e.Hint)
}

// CwdError says that a context's working directory is not a directory.
type CwdError struct {
	Dir string
	Err error
}

func (e *CwdError) Error() string { return fmt.Sprintf("working directory %s: %v", e.Dir, e.Err) }
func (e *CwdError) Unwrap() error { return e.Err }

// StartError says that an interpreter failed to start; Detail is what it
// said (a few lines of stderr), safe to show to the sandbox's user.
type StartError struct {
	Language Language
	Detail   string
}

func (e *StartError) Error() string {
	return fmt.Sprintf("the %s interpreter did not start: %s", e.Language, e.Detail)
}

// Config is what every context of one agent shares.
type Config struct {
	// Dir is a private directory for the drivers, made 0700.
	Dir string
	// Workspace is the default working directory of contexts.
	Workspace string
	// Self is the agent binary, re-executed as the spawn wrapper; default
	// /proc/self/exe.
	Self string
	// CgroupRoot is passed to the spawn wrapper (see package spawn).
	CgroupRoot string
	// Transpiler is the TypeScript helper's binary (sandbox-transpile,
	// package transpile), started through the spawn wrapper on the first
	// cell that needs it. Empty: TypeScript cells fail with a
	// TranspileError, and JavaScript runs as written.
	Transpiler string
	// BaseEnv is the environment of every interpreter, before a context's
	// own variables. Its PATH finds python3 and node.
	BaseEnv []string
	// Reaper collects the interpreters' exit statuses. Required.
	Reaper *reaper.Reaper
	// Log gets operator messages; never code, env values or output.
	Log *slog.Logger

	// Python and Node name the interpreters; defaults python3 and node,
	// looked up in BaseEnv's PATH.
	Python, Node string
	// MaxContexts bounds the contexts, default ones included; default 16.
	MaxContexts int
	// MaxQueue bounds the runs waiting on one context; default 16.
	MaxQueue int
	// MaxOutputBytes bounds what one run reports (output and results);
	// default 32 MiB.
	MaxOutputBytes int
	// StartTimeout bounds an interpreter's start; default 60s (IPython
	// takes a second or more on a busy machine).
	StartTimeout time.Duration
	// KillGrace is how long an interrupted run may take to end before its
	// interpreter is killed; default 3s.
	KillGrace time.Duration
	// NoSpares turns off the warm spare interpreters (see Manager).
	NoSpares bool
}

// Stream names an output stream of user code.
type Stream int

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// Result is one rich output: the last expression's value, a display()
// call, or a figure. Data maps MIME types to their representation: text,
// or base64 for images, or raw JSON for application/json.
type Result struct {
	Data      map[string]string
	Main      bool
	Truncated bool
}

// ExecError is an error raised by user code.
type ExecError struct {
	Name      string
	Value     string
	Traceback []string
}

// Sink receives a run's events as they happen, on one goroutine at a time.
// An error from a Sink method (the caller went away) interrupts the run.
type Sink interface {
	// Begin is called once the run leaves the queue and starts.
	Begin(c *Context)
	Output(st Stream, p []byte) error
	Result(r Result) error
	Error(e ExecError) error
}

// Outcome is how a run ended.
type Outcome struct {
	// ExecutionCount is the context's count of executed runs.
	ExecutionCount int
	Duration       time.Duration
	// TimedOut is set when the run was interrupted at its timeout.
	TimedOut bool
	// Truncated is set when output or results were dropped.
	Truncated bool
}
