package api

import "fmt"

// Code is a stable, machine-readable error code. Codes never change meaning;
// new ones are only added. Where the reference SDK has a code for a case, the
// same spelling is used.
type Code string

// Error codes. The HTTP status each one maps to is fixed in internal/httpapi
// and documented in docs/api.md.
const (
	// Request problems (4xx).
	CodeInvalidJSON       Code = "INVALID_JSON"       // body is not valid JSON for the route
	CodeValidationFailed  Code = "VALIDATION_FAILED"  // a field is missing, malformed or out of range
	CodeInvalidSandboxID  Code = "INVALID_SANDBOX_ID" // ID is not a DNS label of 1-63 chars
	CodeRequestTooLarge   Code = "REQUEST_TOO_LARGE"  // body exceeds the route's limit
	CodeUnauthorized      Code = "UNAUTHORIZED"       // missing or wrong bearer token
	CodeNotFound          Code = "NOT_FOUND"          // no such route
	CodeMethodNotAllowed  Code = "METHOD_NOT_ALLOWED" // route exists, method does not
	CodeSandboxNotFound   Code = "SANDBOX_NOT_FOUND"  // read-only call on an unknown sandbox
	CodeSandboxExists     Code = "SANDBOX_EXISTS"     // create-only call on an existing sandbox
	CodeCommandTimeout    Code = "COMMAND_TIMEOUT"    // command ran past its timeout and was killed
	CodeSessionTerminated Code = "SESSION_TERMINATED" // the session's shell exited; the next call gets a fresh one
	CodeSessionNotFound   Code = "SESSION_NOT_FOUND"  // no session with that ID
	CodeSessionExists     Code = "SESSION_ALREADY_EXISTS"
	CodeSessionBusy       Code = "SESSION_BUSY"       // too many commands queued on one session
	CodeResourceExhausted Code = "RESOURCE_EXHAUSTED" // a per-sandbox or per-host count limit was reached
	CodeCapacityExceeded  Code = "CAPACITY_EXCEEDED"  // the host cannot run another sandbox now
	CodeImageNotFound     Code = "IMAGE_NOT_FOUND"    // the image named at creation is not in the image store
	CodeRequestTimeout    Code = "REQUEST_TIMEOUT"    // the request's body did not arrive in time
	// CodeUnsupportedByRuntime: the sandbox's runtime (gVisor) cannot do
	// what was asked; docs/security.md lists what.
	CodeUnsupportedByRuntime Code = "UNSUPPORTED_BY_RUNTIME"
	// CodeSandboxStateConflict: the sandbox's status does not allow the
	// call (starting one whose destroy failed half-way, stopping one that
	// is being created).
	CodeSandboxStateConflict Code = "SANDBOX_STATE_CONFLICT"

	// Server-side problems (5xx).
	CodeSandboxUnavailable Code = "SANDBOX_UNAVAILABLE" // the sandbox's agent cannot be reached or died mid-call
	CodeSandboxFailed      Code = "SANDBOX_FAILED"      // the sandbox could not be created or started
	// CodeSandboxLost: the sandbox's files vanished behind the daemon's
	// back (status lost); destroy it and create it again.
	CodeSandboxLost        Code = "SANDBOX_LOST"
	CodeRuntimeUnavailable Code = "RUNTIME_UNAVAILABLE" // the runtime the sandbox names is not installed or failed its start-up probe
	CodeProtocolMismatch   Code = "PROTOCOL_MISMATCH"   // the agent speaks a protocol this daemon does not
	CodeInternal           Code = "INTERNAL_ERROR"      // a bug; details are in the daemon's log
)

// Error is the body of every non-2xx response and the payload of `error`
// stream events.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Details carries code-specific data, e.g. the output captured before a
	// COMMAND_TIMEOUT. Optional.
	Details map[string]any `json:"details,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
