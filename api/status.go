package api

import "net/http"

// statusOf is the one table from error code to HTTP status. The daemon and
// the agent answer with these statuses; the SDK needs only the code.
var statusOf = map[Code]int{
	CodeInvalidJSON:          http.StatusBadRequest,
	CodeValidationFailed:     http.StatusBadRequest,
	CodeInvalidNetworkPolicy: http.StatusBadRequest,
	CodeInvalidSandboxID:     http.StatusBadRequest,
	CodeRequestTooLarge:      http.StatusRequestEntityTooLarge,
	CodeUnauthorized:         http.StatusUnauthorized,
	CodeNotFound:             http.StatusNotFound,
	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeSandboxNotFound:      http.StatusNotFound,
	CodeSandboxExists:        http.StatusConflict,
	CodeSandboxStateConflict: http.StatusConflict,
	CodeCommandTimeout:       http.StatusRequestTimeout,
	CodeSessionTerminated:    http.StatusGone,
	CodeSessionNotFound:      http.StatusNotFound,
	CodeSessionExists:        http.StatusConflict,
	CodeSessionBusy:          http.StatusTooManyRequests,
	CodeResourceExhausted:    http.StatusTooManyRequests,
	CodeCapacityExceeded:     http.StatusServiceUnavailable,
	CodeImageNotFound:        http.StatusNotFound,
	CodeRequestTimeout:       http.StatusRequestTimeout,
	CodeUnsupportedByRuntime: http.StatusNotImplemented,
	CodeRuntimeUnavailable:   http.StatusServiceUnavailable,
	CodeSandboxUnavailable:   http.StatusServiceUnavailable,
	CodeSandboxFailed:        http.StatusInternalServerError,
	CodeSandboxLost:          http.StatusGone,
	CodeProtocolMismatch:     http.StatusBadGateway,
	CodeInternal:             http.StatusInternalServerError,
}

// HTTPStatus is the HTTP status that goes with the code; 500 for a code
// this version does not know.
func (c Code) HTTPStatus() int {
	if s, ok := statusOf[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// RegisterStatus records the HTTP status of a code defined outside this
// file (by a feature's own wire types). Call it from an init function.
func RegisterStatus(c Code, status int) { statusOf[c] = status }
