package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

func TestExitCode(t *testing.T) {
	timeout := &client.Error{Status: 408, Code: api.CodeCommandTimeout, Message: "ran past 2s"}
	notFound := &client.Error{Status: 404, Code: api.CodeSandboxNotFound, Message: "no sandbox x"}
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantStderr string
	}{
		{"success", nil, 0, ""},
		{"remote exit", exitStatus(3), 3, ""},
		{"remote exit 255", exitStatus(255), 255, ""},
		{"remote exit out of range", exitStatus(300), 255, ""},
		{"remote exit negative", exitStatus(-1), 255, ""},
		{"timeout", timeout, 124, "sandbox: COMMAND_TIMEOUT: ran past 2s\n"},
		{"stream timeout event", &client.Error{Code: api.CodeCommandTimeout, Message: "m"}, 124, "sandbox: COMMAND_TIMEOUT: m\n"},
		{"api error", notFound, 125, "sandbox: SANDBOX_NOT_FOUND: no sandbox x\n"},
		{"wrapped api error", fmt.Errorf("doing things: %w", notFound), 125, "sandbox: SANDBOX_NOT_FOUND: no sandbox x\n"},
		{"api error without code", &client.Error{Status: 502, Message: "Bad Gateway"}, 125, "sandbox: HTTP 502: Bad Gateway\n"},
		{"unauthorized", &client.Error{Status: 401, Code: api.CodeUnauthorized, Message: "m"}, 125,
			"sandbox: UNAUTHORIZED: m\nhint: pass --token or set SANDBOX_TOKEN; the daemon's token is in its state directory (/var/lib/sandboxd/token)\n"},
		{"unreachable", fmt.Errorf("%w: %w", client.ErrUnavailable, &url.Error{Op: "Get", URL: "http://x/v1/health", Err: errors.New("refused")}), 125,
			"sandbox: unavailable: Get \"http://x/v1/health\": refused\nhint: is sandboxd running? Point --url or SANDBOX_URL at it\n"},
		{"usage", &usageError{cmd: "sandbox exec", err: errors.New("missing ID")}, 125, "sandbox: missing ID\nhint: run 'sandbox exec --help' for usage\n"},
		{"interrupted", context.Canceled, 130, ""},
		{"reported", reportedError{}, 125, ""},
		{"message on one line", errors.New("a\nforged line"), 125, "sandbox: a\\nforged line\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := exitCode(&stderr, tt.err); got != tt.wantCode {
				t.Errorf("exit code = %d, want %d", got, tt.wantCode)
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
