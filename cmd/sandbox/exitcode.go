package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/sandboxd/sandboxd/client"
)

// Exit codes of the CLI itself. They follow docker run and timeout(1), so
// that they stay apart from the exit codes of remote commands, which
// `sandbox exec` passes through: 124 and 125 are rare as real exit codes.
const (
	exitTimeout     = 124 // the remote command ran past --timeout
	exitFailure     = 125 // the CLI failed: usage, connection, API error
	exitInterrupted = 130 // Ctrl-C or SIGTERM (128 + SIGINT)
)

// exitStatus is the non-zero exit code of a remote command. It is returned
// as an error so that it reaches main, but it is not reported as one.
type exitStatus int

func (s exitStatus) Error() string {
	return fmt.Sprintf("remote command exited with status %d", int(s))
}

// usageError is a mistake on the command line.
type usageError struct {
	cmd string
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// reportedError says that the failure has been reported already (by rm, for
// each ID) and only the exit code is left to give.
type reportedError struct{}

func (reportedError) Error() string { return "failed" }

// exitCode reports err on w the way the CLI does and returns the process
// exit code:
//
//	nil                       0
//	remote command exit N     N (255 if out of range)
//	timeout (ErrTimeout)      124, after "sandbox: COMMAND_TIMEOUT: ..."
//	interrupted               130
//	anything else             125, after "sandbox: CODE: message" or "sandbox: error"
func exitCode(w io.Writer, err error) int {
	var status exitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &status):
		if status < 1 || status > 255 {
			return 255
		}
		return int(status)
	case errors.Is(err, reportedError{}):
		return exitFailure
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	fmt.Fprintf(w, "sandbox: %s\n", message(err))
	if h := hint(err); h != "" {
		fmt.Fprintf(w, "hint: %s\n", h)
	}
	if errors.Is(err, client.ErrTimeout) {
		return exitTimeout
	}
	return exitFailure
}

// message is what the CLI prints for err: "CODE: message" for an API
// error, whatever context the CLI wrapped it in, else the error's text.
func message(err error) string {
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		return oneLine(apiErr.Error())
	}
	return oneLine(err.Error())
}

// hint suggests a fix for common mistakes.
func hint(err error) string {
	var usage *usageError
	var transport *url.Error
	switch {
	case errors.As(err, &usage):
		return fmt.Sprintf("run '%s --help' for usage", usage.cmd)
	case errors.Is(err, client.ErrUnauthorized):
		return "pass --token or set " + client.EnvToken + "; the daemon's token is in its state directory (" + defaultStateDir + "/token)"
	case errors.As(err, &transport):
		return "is sandboxd running? Point --url or " + client.EnvURL + " at it"
	}
	return ""
}

// oneLine keeps an error message on one line, so that a message from the
// daemon cannot forge further output lines.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}
