package agent

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// Limits of an exec request beyond those in api.
const (
	// maxExecBody bounds the body: the largest command, the largest stdin
	// with room for JSON escaping or base64, and the rest.
	maxExecBody = api.MaxCommandBytes + 2*api.MaxStdinBytes + 64<<10
	// maxEnvName and maxCwd bound one env name and the cwd.
	maxEnvName = 256
	maxCwd     = 4096
)

// execCall is a decoded and validated exec request.
type execCall struct {
	sessionID string
	command   string
	cmd       session.Command
}

// decodeExecRequest reads and validates the body of POST /exec and
// /exec/stream.
func decodeExecRequest(w http.ResponseWriter, r *http.Request) (execCall, *api.Error) {
	return decodeExec(http.MaxBytesReader(w, r.Body, maxExecBody))
}

// decodeExec decodes one JSON exec request from body and validates it.
// Nothing of the request reaches a shell unless it passed here.
func decodeExec(body io.Reader) (execCall, *api.Error) {
	var req api.ExecRequest
	dec := json.NewDecoder(body)
	// A misspelt option ("timout") must be an error, not a command run
	// without it.
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return execCall{}, decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return execCall{}, decodeError(err)
		}
		return execCall{}, api.Errorf(api.CodeInvalidJSON, "the body must be one JSON object")
	}
	return validateExec(&req)
}

func decodeError(err error) *api.Error {
	// encoding/json has no typed error for an unknown field.
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return api.Errorf(api.CodeValidationFailed, "unknown field %s", field)
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return api.Errorf(api.CodeRequestTooLarge, "the body exceeds %d bytes", tooLarge.Limit)
	}
	if errors.Is(err, io.EOF) {
		return api.Errorf(api.CodeInvalidJSON, "the body is empty; expected a JSON object")
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return api.Errorf(api.CodeInvalidJSON, "field %q has the wrong type", typeErr.Field)
	}
	return api.Errorf(api.CodeInvalidJSON, "the body is not valid JSON")
}

// validateExec checks every field of req and converts it to a session
// command. It is the one place where exec requests are validated.
func validateExec(req *api.ExecRequest) (execCall, *api.Error) {
	invalid := func(format string, args ...any) (execCall, *api.Error) {
		return execCall{}, api.Errorf(api.CodeValidationFailed, format, args...)
	}
	call := execCall{sessionID: req.SessionID, command: req.Command}
	if call.sessionID == "" {
		call.sessionID = session.Default
	}
	if !session.ValidID(call.sessionID) {
		return invalid("sessionId must be 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit")
	}
	switch {
	case strings.TrimSpace(req.Command) == "":
		return invalid("command is empty")
	case len(req.Command) > api.MaxCommandBytes:
		return invalid("command exceeds %d bytes", api.MaxCommandBytes)
	case strings.IndexByte(req.Command, 0) >= 0:
		return invalid("command contains a NUL byte")
	}
	if len(req.Env) > api.MaxEnvVars {
		return invalid("env has more than %d variables", api.MaxEnvVars)
	}
	for name, value := range req.Env {
		if len(name) > maxEnvName || !session.ValidEnvName(name) {
			return invalid("env name %q is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*, at most %d characters)", truncate(name, 64), maxEnvName)
		}
		if strings.IndexByte(value, 0) >= 0 {
			return invalid("env value of %s contains a NUL byte", name)
		}
	}
	switch {
	case len(req.Cwd) > maxCwd:
		return invalid("cwd exceeds %d bytes", maxCwd)
	case strings.IndexByte(req.Cwd, 0) >= 0:
		return invalid("cwd contains a NUL byte")
	}
	if req.Timeout < 0 || req.Timeout > api.MaxTimeout.Milliseconds() {
		return invalid("timeout must be between 0 and %d milliseconds", api.MaxTimeout.Milliseconds())
	}
	var stdin []byte
	switch req.StdinEncoding {
	case "", api.EncodingUTF8:
		if req.Stdin != "" {
			stdin = []byte(req.Stdin)
		}
	case api.EncodingBase64:
		if req.Stdin != "" {
			var err error
			if stdin, err = base64.StdEncoding.DecodeString(req.Stdin); err != nil {
				return invalid("stdin is not valid base64")
			}
		}
	default:
		return invalid("stdinEncoding must be %q or %q", api.EncodingUTF8, api.EncodingBase64)
	}
	if len(stdin) > api.MaxStdinBytes {
		return invalid("stdin exceeds %d bytes", api.MaxStdinBytes)
	}
	call.cmd = session.Command{
		Text:    req.Command,
		Env:     req.Env,
		Cwd:     req.Cwd,
		Stdin:   stdin,
		Timeout: time.Duration(req.Timeout) * time.Millisecond,
	}
	return call, nil
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
