package api

import (
	"net/http"
	"time"
)

// Error codes of terminals.
const (
	// CodeTerminalNotFound: no terminal with that ID (closing one).
	CodeTerminalNotFound Code = "TERMINAL_NOT_FOUND"
	// CodeTerminalConflict: the terminal ID is taken by a terminal of
	// another session.
	CodeTerminalConflict Code = "TERMINAL_CONFLICT"
)

func init() {
	RegisterStatus(CodeTerminalNotFound, http.StatusNotFound)
	RegisterStatus(CodeTerminalConflict, http.StatusConflict)
}

// TerminalSubprotocol is the WebSocket subprotocol of
// GET /v1/sandboxes/{id}/terminal. Clients should offer it; the server
// selects it when offered.
const TerminalSubprotocol = "sandboxd.terminal.v1"

// TokenSubprotocolPrefix lets a WebSocket client that cannot set headers
// (a browser) send the API token: it offers the subprotocol
// "sandboxd.token.<token>" beside the one it wants. The daemon
// authenticates with it, removes it before forwarding, and never selects
// it. Only tokens made of subprotocol-safe characters (the generated ones:
// hex) can be sent this way.
const TokenSubprotocolPrefix = "sandboxd.token."

// Query parameters of GET /v1/sandboxes/{id}/terminal, a WebSocket.
//
//	terminal     the terminal's ID (as a session ID: 1-64 of A-Za-z0-9._-);
//	             default: the session's ID, else "default". A client naming a
//	             terminal that runs attaches to it and first gets its recent
//	             output; otherwise a new shell starts.
//	session      start the shell with this session's current environment and
//	             working directory; default: the sandbox's environment in
//	             /workspace.
//	shell        absolute path of the shell; default /bin/bash, else /bin/sh.
//	cols, rows   the client's size (1-1000); default 80x24.
//	idleTimeout  milliseconds the shell lives on after its last client
//	             leaves; default 10 minutes, at most 24 hours.
//
// Frames: binary frames carry terminal bytes, input from the client and
// output from the server. Text frames carry one TerminalMessage each.
const (
	DefaultTerminalCols        = 80
	DefaultTerminalRows        = 24
	MaxTerminalSize            = 1000
	DefaultTerminalIdleTimeout = 10 * time.Minute
	MaxTerminalIdleTimeout     = 24 * time.Hour
	// MaxTerminalFrameBytes bounds one frame from a client.
	MaxTerminalFrameBytes = 64 << 10
	// TerminalReplayBytes is how much recent output a terminal keeps for
	// clients that attach later.
	TerminalReplayBytes = 256 << 10
)

// Types of TerminalMessage.
const (
	// TerminalResize (client): the client's terminal is now Cols x Rows.
	TerminalResize = "resize"
	// TerminalReady (server, first frame): the terminal runs; the recent
	// output follows as binary frames, then live output.
	TerminalReady = "ready"
	// TerminalExit (server, last frame): the shell exited with ExitCode;
	// the server then closes the WebSocket normally.
	TerminalExit = "exit"
	// TerminalError (server): Code and Message say what went wrong. A
	// fatal error is followed by a close.
	TerminalError = "error"
)

// TerminalMessage is the JSON of a text frame.
type TerminalMessage struct {
	Type string `json:"type"`
	// Cols and Rows: resize, ready.
	Cols int `json:"cols,omitempty"`
	Rows int `json:"rows,omitempty"`
	// Terminal, Session, PID and Created (whether this client's attach
	// started the shell): ready.
	Terminal string `json:"terminal,omitempty"`
	Session  string `json:"session,omitempty"`
	PID      int    `json:"pid,omitempty"`
	Created  bool   `json:"created,omitempty"`
	// ExitCode: exit. 128+n when the shell was killed by signal n.
	ExitCode *int `json:"exitCode,omitempty"`
	// Code and Message: error.
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// TerminalInfo describes a running terminal.
type TerminalInfo struct {
	ID      string `json:"id"`
	Session string `json:"session,omitempty"`
	Shell   string `json:"shell"`
	PID     int    `json:"pid"`
	Cols    int    `json:"cols"`
	Rows    int    `json:"rows"`
	// Clients is the number of clients attached now.
	Clients   int       `json:"clients"`
	CreatedAt time.Time `json:"createdAt"`
}

// TerminalList is the body of GET /v1/sandboxes/{id}/terminals.
type TerminalList struct {
	Terminals []TerminalInfo `json:"terminals"`
}
