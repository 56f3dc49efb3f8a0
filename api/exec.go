package api

import "time"

// DefaultSession is the ID of the session every sandbox has.
const DefaultSession = "default"

// SessionHeader names the session for calls whose body has no sessionId
// field (file operations, for instance).
const SessionHeader = "X-Sandbox-Session"

// Limits of the exec API, shared by agent, daemon and SDK.
const (
	// MaxCommandBytes bounds the command line of one exec.
	MaxCommandBytes = 1 << 20
	// MaxStdinBytes bounds the stdin carried inside an exec request.
	MaxStdinBytes = 8 << 20
	// MaxBufferedOutputBytes is the most stdout (and, separately, stderr)
	// that a buffered exec result carries; the rest is dropped and the
	// result's Truncated flag is set. Streaming exec has no cap.
	MaxBufferedOutputBytes = 16 << 20
	// MaxEnvVars bounds the env map of one request.
	MaxEnvVars = 1024
	// MaxTimeout is the longest timeout an exec may ask for.
	MaxTimeout = 24 * time.Hour
)

// ExecRequest is the body of POST /v1/sandboxes/{id}/exec and
// /exec/stream.
type ExecRequest struct {
	// Command is one shell command line, run by the session's bash.
	Command string `json:"command"`
	// SessionID selects the session; default "default".
	SessionID string `json:"sessionId,omitempty"`
	// Env is set for this command only; the session's variables of the same
	// names are restored afterwards.
	Env map[string]string `json:"env,omitempty"`
	// Cwd is the working directory for this command only.
	Cwd string `json:"cwd,omitempty"`
	// Timeout in milliseconds; 0 means none (the session's commandTimeout
	// applies if it has one). At most 24h.
	Timeout int64 `json:"timeout,omitempty"`
	// Stdin is fed to the command, then closed. Without it stdin is empty.
	Stdin string `json:"stdin,omitempty"`
	// StdinEncoding is "utf-8" (default) or "base64".
	StdinEncoding string `json:"stdinEncoding,omitempty"`
}

// Output encodings. Output that is valid UTF-8 is sent as is; anything else
// is sent base64-encoded with Encoding set, so binary output never breaks
// JSON and is never altered.
const (
	EncodingUTF8   = "utf-8"
	EncodingBase64 = "base64"
)

// ExecResult is the body of a completed buffered exec.
type ExecResult struct {
	Success   bool   `json:"success"`
	ExitCode  int    `json:"exitCode"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Command   string `json:"command"`
	SessionID string `json:"sessionId"`
	// Duration is the command's run time in milliseconds.
	Duration int64 `json:"duration"`
	// Encoding is "base64" when Stdout and Stderr are base64-encoded because
	// one of them was not valid UTF-8; empty otherwise.
	Encoding string `json:"encoding,omitempty"`
	// Truncated is set when output beyond MaxBufferedOutputBytes was dropped.
	Truncated bool `json:"truncated,omitempty"`
}

// Exec stream event types, in the order they can occur. A stream carries one
// start, any number of stdout/stderr events, then exactly one of complete or
// error.
const (
	EventStart    = "start"
	EventStdout   = "stdout"
	EventStderr   = "stderr"
	EventComplete = "complete"
	EventError    = "error"
)

// ExecEvent is one Server-Sent Event of a streaming exec. The SSE event name
// equals Type.
type ExecEvent struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	// Command and SessionID are set on start.
	Command   string `json:"command,omitempty"`
	SessionID string `json:"sessionId,omitempty"`
	// Data is a chunk of output (stdout/stderr). Chunks never split a UTF-8
	// character; non-UTF-8 chunks are base64 with Encoding set.
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// ExitCode and Duration (ms) are set on complete.
	ExitCode *int  `json:"exitCode,omitempty"`
	Duration int64 `json:"duration,omitempty"`
	// Code and Message are set on error; Code is a stable error code.
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// IsTerminal is the one end-of-stream rule of every event stream of the API
// (exec, code runs, process logs, file reads, watches, image builds,
// lifecycle events): an event named complete, exit or error ends its
// stream, whatever it carries, and nothing follows it. Events that report
// a failure without ending the stream have other names (a code run's
// execution_error). A stream that stops without a terminal event was cut:
// its outcome is unknown (the daemon appends an error event with
// SANDBOX_UNAVAILABLE when an agent's stream is cut).
func IsTerminal(eventType string) bool {
	switch eventType {
	case EventComplete, EventError, "exit":
		return true
	}
	return false
}
