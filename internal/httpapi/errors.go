package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// writeError answers with err as an api.Error. Errors the edge does not
// recognise are internal: the user gets a generic message and the cause
// goes to the log.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The call failed because the client left (or half-closed its
		// side): no answer, rather than a 500 it did not cause.
		abortResponse()
	}
	e := s.classify(err)
	e.Message = localMessage(r, e.Message)
	s.logFailure(r.Context(), "request failed", e.Code, err, "method", r.Method, "path", r.URL.Path)
	switch e.Code {
	case api.CodeCapacityExceeded, api.CodeSandboxMoving, api.CodeTooManyImageJobs, api.CodeImageJobsBusy:
		retryAfter(w)
	}
	s.countError(e.Code)
	writeAPIError(w, e)
}

// logLevel is the level a failed call with code is logged at: the one
// place that decides it. Error is for what the daemon itself got wrong
// (a bug, a sandbox that would not start, an agent speaking another
// protocol), the lines an operator is paged for. Other 5xx answers are
// expected in operation, warnings: the host or a node is full or busy, a
// sandbox is moving, an outside server (a bucket, a registry, a git host,
// a sandbox's own service) did not answer, a runtime is not installed. A
// 4xx is the caller's doing, and debug.
func logLevel(code api.Code) slog.Level {
	switch code {
	case api.CodeInternal, api.CodeSandboxFailed, api.CodeProtocolMismatch:
		return slog.LevelError
	}
	if code.HTTPStatus() >= 500 {
		return slog.LevelWarn
	}
	return slog.LevelDebug
}

// logFailure logs a call that failed with code at logLevel(code); the
// cause goes with it from warning up (a 4xx cause may quote what the
// caller sent).
func (s *Server) logFailure(ctx context.Context, msg string, code api.Code, err error, args ...any) {
	level := logLevel(code)
	if !s.log.Enabled(ctx, level) {
		return
	}
	args = append(args, "code", code)
	if level >= slog.LevelWarn {
		args = append(args, "err", err)
	}
	s.log.Log(ctx, level, msg, args...)
}

func writeAPIError(w http.ResponseWriter, e *api.Error) {
	if e.Code == api.CodeUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxd"`)
	}
	writeJSON(w, e.Code.HTTPStatus(), e)
}

// classify maps a domain error to its wire form, once, here.
func (s *Server) classify(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	if e := classifyImage(err); e != nil {
		return e
	}
	if e := classifyStorage(err); e != nil {
		return e
	}
	if e := classifySnapshot(err); e != nil {
		return e
	}
	if e := classifyBackup(err); e != nil {
		return e
	}
	if e := classifyTenancy(err); e != nil {
		return e
	}
	msg := err.Error()
	var me *sandbox.MovingError
	if errors.As(err, &me) {
		return &api.Error{Code: api.CodeSandboxMoving, Message: me.Error(), Details: map[string]any{"node": me.Node}}
	}
	var pe *sandbox.PolicyError
	if errors.As(err, &pe) {
		return &api.Error{Code: api.CodeInvalidNetworkPolicy, Message: pe.Error(),
			Details: map[string]any{"entry": pe.Entry, "value": pe.Value}}
	}
	switch {
	case errors.Is(err, sandbox.ErrHostAccessForbidden):
		return &api.Error{Code: api.CodeHostAccessForbidden, Message: msg}
	case errors.Is(err, sandbox.ErrNotFound):
		return &api.Error{Code: api.CodeSandboxNotFound, Message: msg}
	case errors.Is(err, sandbox.ErrInvalid):
		return &api.Error{Code: api.CodeValidationFailed, Message: strings.TrimPrefix(msg, sandbox.ErrInvalid.Error()+": ")}
	case errors.Is(err, sandbox.ErrImageNotFound):
		return &api.Error{Code: api.CodeImageNotFound, Message: msg}
	case errors.Is(err, sandbox.ErrRuntimeUnavailable):
		return &api.Error{Code: api.CodeRuntimeUnavailable, Message: msg}
	case errors.Is(err, sandbox.ErrUnsupported):
		return &api.Error{Code: api.CodeUnsupportedByRuntime, Message: msg}
	case errors.Is(err, sandbox.ErrLost):
		return &api.Error{Code: api.CodeSandboxLost, Message: msg}
	case errors.Is(err, sandbox.ErrConflict):
		return &api.Error{Code: api.CodeSandboxStateConflict, Message: msg}
	case errors.Is(err, sandbox.ErrCapacity):
		return &api.Error{Code: api.CodeCapacityExceeded, Message: msg}
	case errors.Is(err, sandbox.ErrFailed):
		return &api.Error{Code: api.CodeSandboxFailed, Message: msg}
	case errors.Is(err, sandbox.ErrUnavailable):
		return &api.Error{Code: api.CodeSandboxUnavailable, Message: msg}
	}
	return &api.Error{Code: api.CodeInternal, Message: "internal error; see the daemon's log"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("writing response", "err", err)
	}
}
