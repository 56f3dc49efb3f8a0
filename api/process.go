package api

import (
	"net/http"
	"time"
)

// Limits and defaults of the background process API.
const (
	// MaxRunningProcesses is the most background processes a sandbox runs
	// at once (status starting or running).
	MaxRunningProcesses = 64
	// MaxProcessRecords is the most process records a sandbox keeps;
	// beyond it the oldest finished record is removed.
	MaxProcessRecords = 256
	// MaxLogBytes is the most output of one stream (stdout or stderr) of
	// one process kept on disk: its first MaxLogBytes. Beyond it the most
	// recent LogTailBytes are kept too, and the log is marked truncated.
	MaxLogBytes = 16 << 20
	// LogTailBytes is the in-memory ring of each stream: the most recent
	// output, kept when the disk log is full.
	LogTailBytes = 64 << 10
	// DefaultKillGrace is how long a process may take to exit after SIGTERM
	// before it gets SIGKILL.
	DefaultKillGrace = 5 * time.Second
	// MaxKillGrace bounds the grace period a kill may ask for.
	MaxKillGrace = 10 * time.Minute
	// DefaultReadyTimeout is the timeout of readiness waits that set none.
	DefaultReadyTimeout = 30 * time.Second
	// AutoCleanupAfter is how long a finished process started with
	// autoCleanup keeps its record and logs.
	AutoCleanupAfter = 5 * time.Minute
	// MaxProcessIDLength bounds a process ID.
	MaxProcessIDLength = 64
	// MaxPatternBytes bounds a waitForLog pattern.
	MaxPatternBytes = 4096
)

// ProcessStatus is where a background process is in its life:
// starting → running → completed | failed | killed | error.
type ProcessStatus string

const (
	// ProcessStarting: being started; it has no PID of its own yet.
	ProcessStarting ProcessStatus = "starting"
	// ProcessRunning: its program runs.
	ProcessRunning ProcessStatus = "running"
	// ProcessCompleted: it exited with status 0.
	ProcessCompleted ProcessStatus = "completed"
	// ProcessFailed: it exited with a non-zero status.
	ProcessFailed ProcessStatus = "failed"
	// ProcessKilled: a signal ended it (a kill, its timeout, its session's
	// deletion, or an agent restart; StatusReason says which).
	ProcessKilled ProcessStatus = "killed"
	// ProcessError: it could not be started (StatusReason says why).
	ProcessError ProcessStatus = "error"
)

// Done reports whether the status is final.
func (s ProcessStatus) Done() bool {
	switch s {
	case ProcessCompleted, ProcessFailed, ProcessKilled, ProcessError:
		return true
	}
	return false
}

// StartProcessRequest is the body of POST /v1/sandboxes/{id}/processes.
type StartProcessRequest struct {
	// Command is one shell command line, run by bash -c (sh -c where there
	// is no bash). Required.
	Command string `json:"command"`
	// ProcessID names the process: 1-64 of [A-Za-z0-9._-], starting with a
	// letter or digit, unique in the sandbox (PROCESS_EXISTS). Default: a
	// generated "proc-xxxxxxxx".
	ProcessID string `json:"processId,omitempty"`
	// Env is added for this process; it overrides the session's.
	Env map[string]string `json:"env,omitempty"`
	// Cwd is the working directory; default the session's cwd option.
	Cwd string `json:"cwd,omitempty"`
	// SessionID is the session whose environment, cwd and user the process
	// gets, and with which it dies. Default "default".
	SessionID string `json:"sessionId,omitempty"`
	// Timeout (ms): the process's whole tree is killed when it is reached
	// (status killed, statusReason "timeout"). 0: none. At most 24h.
	Timeout int64 `json:"timeout,omitempty"`
	// User runs the process as this user (see CreateSessionRequest.User);
	// default the session's user.
	User string `json:"user,omitempty"`
	// AutoCleanup removes the record and logs AutoCleanupAfter after the
	// process ends.
	AutoCleanup bool `json:"autoCleanup,omitempty"`
	// Login runs the command as a login shell (bash -l -c): /etc/profile,
	// /etc/profile.d and the user's ~/.bash_profile, ~/.bash_login or
	// ~/.profile run first, in the same shell, as E2B's envd runs
	// commands. Default false.
	Login bool `json:"login,omitempty"`
	// CloseStdin closes the process's stdin as it starts (it reads end of
	// file), saving a stdin call for a process that takes no input.
	// Default false: stdin stays open for POST …/stdin.
	CloseStdin bool `json:"closeStdin,omitempty"`
}

// Process describes a background process.
type Process struct {
	ID string `json:"id"`
	// PID is the process's PID inside the sandbox; 0 while starting or if
	// it could not be started.
	PID       int           `json:"pid"`
	Command   string        `json:"command"`
	Status    ProcessStatus `json:"status"`
	SessionID string        `json:"sessionId"`
	User      string        `json:"user,omitempty"`
	StartTime time.Time     `json:"startTime"`
	// EndTime and ExitCode are set once the process has ended. ExitCode is
	// 128+n for death by signal n; it is absent for status error and for
	// processes lost in an agent restart.
	EndTime  *time.Time `json:"endTime,omitempty"`
	ExitCode *int       `json:"exitCode,omitempty"`
	// StatusReason explains killed and error: "timeout", "signal SIGTERM",
	// "session deleted", "agent restarted", or the start failure.
	StatusReason string `json:"statusReason,omitempty"`
	AutoCleanup  bool   `json:"autoCleanup,omitempty"`
	// Truncated is set when a stream's output went past MaxLogBytes.
	Truncated bool `json:"truncated,omitempty"`
}

// ProcessList is the body of GET /v1/sandboxes/{id}/processes, oldest first.
type ProcessList struct {
	Processes []Process `json:"processes"`
}

// KillProcessRequest is the body of POST .../processes/{pid}/kill and
// POST .../processes/kill (all). Optional.
type KillProcessRequest struct {
	// Signal by name ("SIGTERM", "TERM", "SIGKILL", "HUP"...) or number.
	// Default SIGTERM.
	Signal string `json:"signal,omitempty"`
	// GracePeriod (ms): after SIGTERM, the tree gets SIGKILL if it has not
	// exited within it. Default 5000; at most 10 minutes.
	GracePeriod int64 `json:"gracePeriod,omitempty"`
}

// KillAllResult is the answer of POST .../processes/kill.
type KillAllResult struct {
	// Killed counts the processes that were running and got the signal.
	Killed int `json:"killed"`
}

// ProcessLogs is the body of GET .../processes/{pid}/logs.
type ProcessLogs struct {
	ID     string `json:"id"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// Encoding is "base64" when both streams are base64 because one of
	// them is not valid UTF-8; empty otherwise.
	Encoding string `json:"encoding,omitempty"`
	// Truncated: a stream exceeded MaxLogBytes; what it holds is its first
	// MaxLogBytes, then up to LogTailBytes of its most recent output.
	Truncated bool `json:"truncated,omitempty"`
}

// Process log stream event types: process_info, then stdout/stderr chunks
// (the output so far, then live), then exactly one exit, or an error if the
// stream cannot go on (the agent is shutting down, the record was removed).
const (
	EventProcessInfo = "process_info"
	EventExit        = "exit"
)

// ProcessEvent is one event of GET .../processes/{pid}/logs/stream. The SSE
// event name equals Type.
type ProcessEvent struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	// Process is set on process_info and exit.
	Process *Process `json:"process,omitempty"`
	// Data and Encoding carry a chunk of stdout or stderr, as in ExecEvent.
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// ExitCode and Status are set on exit (ExitCode absent when unknown).
	ExitCode *int          `json:"exitCode,omitempty"`
	Status   ProcessStatus `json:"status,omitempty"`
	// Code and Message are set on error.
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// WaitForLogRequest is the body of POST .../processes/{pid}/wait/log. It
// answers when a line of stdout or stderr (output so far included)
// contains Pattern, or matches it as a regular expression (RE2 syntax)
// when Regex is set.
type WaitForLogRequest struct {
	Pattern string `json:"pattern"`
	Regex   bool   `json:"regex,omitempty"`
	// Timeout in ms; default 30000; at most 24h.
	Timeout int64 `json:"timeout,omitempty"`
}

// WaitForLogResult is the answer of wait/log.
type WaitForLogResult struct {
	// Line is the matching line, without its line break.
	Line string `json:"line"`
	// Stream is "stdout" or "stderr".
	Stream string `json:"stream"`
}

// Port readiness modes.
const (
	PortModeTCP  = "tcp"
	PortModeHTTP = "http"
)

// WaitForPortRequest is the body of POST .../processes/{pid}/wait/port. The
// agent dials the port inside the sandbox (127.0.0.1, then ::1) every
// Interval until it accepts (tcp) or answers an HTTP GET of Path with a
// status in [StatusMin, StatusMax] (http).
type WaitForPortRequest struct {
	Port int `json:"port"`
	// Mode is "tcp" (default) or "http".
	Mode string `json:"mode,omitempty"`
	// Path for http mode; default "/".
	Path string `json:"path,omitempty"`
	// StatusMin and StatusMax for http mode; default 200 and 399.
	StatusMin int `json:"statusMin,omitempty"`
	StatusMax int `json:"statusMax,omitempty"`
	// Timeout in ms; default 30000; at most 24h.
	Timeout int64 `json:"timeout,omitempty"`
	// Interval between attempts in ms; default 100; 10 to 60000.
	Interval int64 `json:"interval,omitempty"`
}

// WaitForPortResult is the answer of wait/port.
type WaitForPortResult struct {
	Port int `json:"port"`
	// Status is the HTTP status in http mode.
	Status int `json:"status,omitempty"`
}

// WaitForExitRequest is the body of POST .../processes/{pid}/wait/exit;
// the answer is the ended Process.
type WaitForExitRequest struct {
	// Timeout in ms; default 30000; at most 24h.
	Timeout int64 `json:"timeout,omitempty"`
}

// StdinRequest is the body of POST .../processes/{pid}/stdin.
type StdinRequest struct {
	// Data is written to the process's stdin; "utf-8" (default) or
	// "base64" per Encoding. At most MaxStdinBytes.
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// Close closes stdin after the data (the process sees EOF).
	Close bool `json:"close,omitempty"`
	// Timeout (ms) for the process to take the data; default 30000.
	Timeout int64 `json:"timeout,omitempty"`
}

// StdinResult is the answer of stdin.
type StdinResult struct {
	Written int  `json:"written"`
	Closed  bool `json:"closed"`
}

// Error codes of processes.
const (
	CodeProcessNotFound          Code = "PROCESS_NOT_FOUND"
	CodeProcessExists            Code = "PROCESS_EXISTS"
	CodeProcessReadyTimeout      Code = "PROCESS_READY_TIMEOUT"
	CodeProcessExitedBeforeReady Code = "PROCESS_EXITED_BEFORE_READY"
	CodeProcessNotRunning        Code = "PROCESS_NOT_RUNNING"
	CodeProcessStdinTimeout      Code = "PROCESS_STDIN_TIMEOUT"
)

func init() {
	RegisterStatus(CodeProcessNotFound, http.StatusNotFound)
	RegisterStatus(CodeProcessExists, http.StatusConflict)
	RegisterStatus(CodeProcessReadyTimeout, http.StatusRequestTimeout)
	RegisterStatus(CodeProcessExitedBeforeReady, http.StatusConflict)
	RegisterStatus(CodeProcessNotRunning, http.StatusConflict)
	RegisterStatus(CodeProcessStdinTimeout, http.StatusRequestTimeout)
}
