package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// ExecResult is the result of a command. It is the wire result with the
// encoding undone: Stdout and Stderr always hold the command's raw output
// bytes (as strings), whether or not they were valid UTF-8, and Encoding is
// always empty.
type ExecResult struct {
	api.ExecResult
}

// Duration returns the command's run time. (The embedded wire field
// ExecResult.Duration holds the same in milliseconds.)
func (r ExecResult) Duration() time.Duration {
	return time.Duration(r.ExecResult.Duration) * time.Millisecond
}

// Exec runs command, one shell command line, in the sandbox and waits for
// it. A command that exits non-zero is not an error: look at ExitCode (or
// Success).
//
// When the command runs past WithTimeout (an error matching ErrTimeout) or
// its session's shell exits under it (ErrSessionTerminated), Exec returns
// both the output captured until then and the error; ExitCode is then what
// the daemon reported, or -1.
//
// With WithCallbacks, Exec streams the command and calls the callbacks as
// output arrives; it then also returns the partial result with any error
// that ends the stream early.
func (s *Sandbox) Exec(ctx context.Context, command string, opts ...ExecOption) (*ExecResult, error) {
	cfg, err := newExecConfig(command, opts)
	if err != nil {
		return nil, err
	}
	if cfg.callbacks != nil {
		st, err := s.execStream(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return st.Collect(*cfg.callbacks)
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var wire api.ExecResult
	err = s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/exec"), &cfg.req, &wire)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && (errors.Is(e, ErrTimeout) || errors.Is(e, ErrSessionTerminated)) {
			return partialResult(&cfg.req, e.Details), err
		}
		return nil, err
	}
	res, err := decodeResult(wire)
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", s.id, err)
	}
	return res, nil
}

// newExecConfig applies opts and checks the request against the API's
// limits, so that a request the daemon would refuse is not sent (a large
// stdin in particular).
func newExecConfig(command string, opts []ExecOption) (*execConfig, error) {
	cfg := &execConfig{req: api.ExecRequest{Command: command}}
	for _, opt := range opts {
		opt.applyExec(cfg)
	}
	switch {
	case command == "":
		return nil, invalidf(api.CodeValidationFailed, "command is empty")
	case len(command) > api.MaxCommandBytes:
		return nil, invalidf(api.CodeValidationFailed, "command is %d bytes; at most %d are allowed", len(command), api.MaxCommandBytes)
	case len(cfg.stdin) > api.MaxStdinBytes:
		return nil, invalidf(api.CodeValidationFailed, "stdin is %d bytes; at most %d are allowed", len(cfg.stdin), api.MaxStdinBytes)
	case len(cfg.req.Env) > api.MaxEnvVars:
		return nil, invalidf(api.CodeValidationFailed, "%d environment variables; at most %d are allowed", len(cfg.req.Env), api.MaxEnvVars)
	case cfg.timeout < 0 || cfg.timeout > api.MaxTimeout:
		return nil, invalidf(api.CodeValidationFailed, "timeout %s is out of range (0 to %s)", cfg.timeout, api.MaxTimeout)
	}
	if cfg.timeout > 0 {
		// Round up, so that a sub-millisecond timeout is not sent as 0,
		// which means none.
		cfg.req.Timeout = int64((cfg.timeout + time.Millisecond - 1) / time.Millisecond)
	}
	if cfg.stdin != nil {
		cfg.req.Stdin = base64.StdEncoding.EncodeToString(cfg.stdin)
		cfg.req.StdinEncoding = api.EncodingBase64
	}
	return cfg, nil
}

// decodeResult undoes the wire encoding of a result's output.
func decodeResult(wire api.ExecResult) (*ExecResult, error) {
	if wire.Encoding == api.EncodingBase64 {
		out, err := base64.StdEncoding.DecodeString(wire.Stdout)
		if err != nil {
			return nil, fmt.Errorf("decoding stdout: %w", err)
		}
		errOut, err := base64.StdEncoding.DecodeString(wire.Stderr)
		if err != nil {
			return nil, fmt.Errorf("decoding stderr: %w", err)
		}
		wire.Stdout, wire.Stderr = string(out), string(errOut)
	}
	wire.Encoding = ""
	return &ExecResult{ExecResult: wire}, nil
}

// partialResult builds the result of a command that did not complete from
// the details of its error: {"stdout", "stderr", "encoding", "duration",
// "exitCode"}. Missing or malformed details give empty output and exit
// code -1; output that fails to decode is dropped.
func partialResult(req *api.ExecRequest, details map[string]any) *ExecResult {
	wire := api.ExecResult{
		ExitCode:  -1,
		Command:   req.Command,
		SessionID: req.SessionID,
	}
	if wire.SessionID == "" {
		wire.SessionID = api.DefaultSession
	}
	wire.Stdout, _ = details["stdout"].(string)
	wire.Stderr, _ = details["stderr"].(string)
	wire.Encoding, _ = details["encoding"].(string)
	if d, ok := details["duration"].(float64); ok {
		wire.Duration = int64(d)
	}
	if code, ok := details["exitCode"].(float64); ok {
		wire.ExitCode = int(code)
	}
	wire.Truncated, _ = details["truncated"].(bool)
	if res, err := decodeResult(wire); err == nil {
		return res
	}
	wire.Stdout, wire.Stderr, wire.Encoding = "", "", ""
	return &ExecResult{ExecResult: wire}
}
