package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sandboxd/sandboxd/api"
)

// Classes of errors. Every error the daemon returns is an *Error; match it
// against a class with errors.Is:
//
//	if errors.Is(err, client.ErrNotFound) { ... }
//
// An *Error belongs to a class when its code or its HTTP status does (see
// the table in docs/sdk.md). Patterns such as "*_NOT_FOUND" also cover codes
// added to the API after this SDK was built.
var (
	// ErrNotFound: NOT_FOUND, SANDBOX_NOT_FOUND, SESSION_NOT_FOUND, any
	// *_NOT_FOUND code; HTTP 404.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: INVALID_JSON, VALIDATION_FAILED, REQUEST_TOO_LARGE, any
	// INVALID_* code (INVALID_SANDBOX_ID, also checked before sending);
	// HTTP 400, 413, 422.
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthorized: UNAUTHORIZED; HTTP 401.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrConflict: any *_EXISTS, *_CONFLICT or *_ALREADY_* code
	// (SANDBOX_EXISTS, SESSION_ALREADY_EXISTS, OPTIONS_CONFLICT,
	// PORT_ALREADY_EXPOSED); HTTP 409.
	ErrConflict = errors.New("conflict")
	// ErrTimeout: COMMAND_TIMEOUT, any *_TIMEOUT code; HTTP 408.
	ErrTimeout = errors.New("timeout")
	// ErrSessionTerminated: SESSION_TERMINATED (the session's shell
	// exited; the next call on the session gets a fresh shell).
	ErrSessionTerminated = errors.New("session terminated")
	// ErrResourceExhausted: RESOURCE_EXHAUSTED, CAPACITY_EXCEEDED,
	// SESSION_BUSY; HTTP 429.
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnavailable: SANDBOX_UNAVAILABLE, any *_UNAVAILABLE code; HTTP 502,
	// 503, 504; a daemon that cannot be reached; a stream that ended before
	// its terminal event. Worth retrying later.
	ErrUnavailable = errors.New("unavailable")
)

// Error is an error answered by the daemon: the body of a non-2xx response,
// an `error` event of a stream, or a request the SDK refused to send because
// the daemon would have refused it (Status 0).
type Error struct {
	// Status is the HTTP status, or 0 when the error did not come with one
	// (stream error events, checks made before sending).
	Status int
	// Code is the stable error code; empty when the body was not JSON (an
	// error page from a proxy, for instance).
	Code api.Code
	// Message is a human-readable description, safe to show to a user.
	Message string
	// Details carries code-specific data, e.g. the output captured before a
	// COMMAND_TIMEOUT. Optional.
	Details map[string]any
}

// Error returns "CODE: message", or "HTTP status: message" without a code.
func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s: %s", e.Code, e.Message)
	}
	if e.Status != 0 {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return e.Message
}

// Is reports whether e belongs to the class target, one of the Err*
// sentinels of this package.
func (e *Error) Is(target error) bool {
	if target == nil {
		return false
	}
	return classOfCode(e.Code) == target || classOfStatus(e.Status) == target
}

// classOfCode returns the class of an error code, or nil.
func classOfCode(code api.Code) error {
	switch code {
	case "":
		return nil
	case api.CodeUnauthorized, api.CodeForbidden:
		return ErrUnauthorized
	case api.CodeSessionTerminated:
		return ErrSessionTerminated
	case api.CodeInvalidJSON, api.CodeValidationFailed, api.CodeRequestTooLarge:
		return ErrInvalid
	case api.CodeResourceExhausted, api.CodeCapacityExceeded, api.CodeSessionBusy, api.CodeContextBusy, api.CodePreviewBusy,
		api.CodeQuotaExceeded:
		return ErrResourceExhausted
	case api.CodeProcessExitedBeforeReady:
		return ErrExitedBeforeReady
	case api.CodeContextTerminated:
		return ErrContextTerminated
	case api.CodeUnsupportedByRuntime, api.CodeMemorySnapshotUnsupported:
		return ErrNotAvailable
	case api.CodeSnapshotInUse:
		return ErrConflict
	}
	s := string(code)
	switch {
	case s == "NOT_FOUND" || strings.HasSuffix(s, "_NOT_FOUND"):
		return ErrNotFound
	case strings.HasPrefix(s, "INVALID_"):
		return ErrInvalid
	case strings.HasSuffix(s, "_EXISTS") || strings.HasSuffix(s, "_CONFLICT") || strings.Contains(s, "_ALREADY_"):
		return ErrConflict
	case s == "TIMEOUT" || strings.HasSuffix(s, "_TIMEOUT"):
		return ErrTimeout
	case strings.HasSuffix(s, "_NOT_AVAILABLE"):
		return ErrNotAvailable
	case strings.HasSuffix(s, "_UNAVAILABLE"):
		return ErrUnavailable
	}
	return nil
}

// classOfStatus returns the class of an HTTP status, or nil.
func classOfStatus(status int) error {
	switch status {
	case 400, 413, 422:
		return ErrInvalid
	case 401:
		return ErrUnauthorized
	case 404:
		return ErrNotFound
	case 408:
		return ErrTimeout
	case 409:
		return ErrConflict
	case 429:
		return ErrResourceExhausted
	case 501:
		return ErrNotAvailable
	case 502, 503, 504:
		return ErrUnavailable
	}
	return nil
}

// invalidf returns an INVALID_*-class error for a request the SDK refuses to
// send.
func invalidf(code api.Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// validateID checks a sandbox ID with the API's rule before any request.
func validateID(id string) error {
	if err := api.ValidateSandboxID(id); err != nil {
		var wire *api.Error
		if errors.As(err, &wire) {
			return &Error{Code: wire.Code, Message: wire.Message}
		}
		return &Error{Code: api.CodeInvalidSandboxID, Message: err.Error()}
	}
	return nil
}
