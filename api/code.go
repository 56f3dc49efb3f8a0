package api

import (
	"encoding/json"
	"net/http"
	"time"
)

// Code interpreter: persistent Python, JavaScript and TypeScript contexts
// inside a sandbox (docs/api-code.md).

// CodeLanguage is the language of a code context.
type CodeLanguage string

const (
	LanguagePython     CodeLanguage = "python"
	LanguageJavaScript CodeLanguage = "javascript"
	LanguageTypeScript CodeLanguage = "typescript"
)

// Error codes of the code interpreter.
const (
	// CodeContextNotFound: no code context with that ID.
	CodeContextNotFound Code = "CONTEXT_NOT_FOUND"
	// CodeContextTerminated: the context's interpreter process died (a
	// crash, os._exit, a kill); the context keeps no state and only
	// deleting it is left. A default context is replaced on the next run
	// that does not name a context.
	CodeContextTerminated Code = "CONTEXT_TERMINATED"
	// CodeContextBusy: too many runs are queued on one context.
	CodeContextBusy Code = "CONTEXT_BUSY"
	// CodePythonNotAvailable: the sandbox's image has no python3 with
	// IPython. The message carries a hint.
	CodePythonNotAvailable Code = "PYTHON_NOT_AVAILABLE"
	// CodeJavaScriptNotAvailable: the sandbox's image has no node (for
	// JavaScript and TypeScript). The message carries a hint.
	CodeJavaScriptNotAvailable Code = "JAVASCRIPT_NOT_AVAILABLE"
)

func init() {
	RegisterStatus(CodeContextNotFound, http.StatusNotFound)
	RegisterStatus(CodeContextTerminated, http.StatusGone)
	RegisterStatus(CodeContextBusy, http.StatusTooManyRequests)
	RegisterStatus(CodePythonNotAvailable, http.StatusNotImplemented)
	RegisterStatus(CodeJavaScriptNotAvailable, http.StatusNotImplemented)
}

// Limits of the code interpreter, shared by agent and SDK.
const (
	// MaxCodeBytes bounds the code of one run.
	MaxCodeBytes = 1 << 20
	// MaxCodeOutputBytes bounds what one run reports: its stdout, stderr
	// and results together. Beyond it output and results are dropped and
	// the run is marked truncated (the code keeps running to its end).
	MaxCodeOutputBytes = 32 << 20
	// MaxCodeContexts bounds the code contexts of one sandbox, the
	// default ones included.
	MaxCodeContexts = 16
	// DefaultCodeTimeout applies to runs that set no timeout.
	DefaultCodeTimeout = 60 * time.Second
)

// CreateCodeContextRequest is the body of POST
// /v1/sandboxes/{id}/code/contexts. Every field is optional.
type CreateCodeContextRequest struct {
	// Language is "python" (default), "javascript" or "typescript".
	Language CodeLanguage `json:"language,omitempty"`
	// Cwd is the interpreter's working directory, which must exist.
	// Default "/workspace".
	Cwd string `json:"cwd,omitempty"`
	// Env is added to the interpreter's environment (the sandbox's
	// environment otherwise). At most 1024 variables.
	Env map[string]string `json:"env,omitempty"`
}

// Code context statuses.
const (
	// ContextReady: the interpreter runs and waits for code (or runs it).
	ContextReady = "ready"
	// ContextTerminated: the interpreter died; runs fail with
	// CONTEXT_TERMINATED.
	ContextTerminated = "terminated"
)

// CodeContext describes one code context: a long-lived interpreter process
// whose state (variables, imports, functions) persists across runs.
type CodeContext struct {
	// ID names the context in runs and deletes. Default contexts (used by
	// runs that name no context) are "default-<language>".
	ID       string       `json:"id"`
	Language CodeLanguage `json:"language"`
	Cwd      string       `json:"cwd"`
	// Status is "ready" or "terminated".
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"createdAt"`
	// LastUsed is when a run last started or ended in the context.
	LastUsed time.Time `json:"lastUsed"`
	// Running is true while a run executes in the context.
	Running bool `json:"running,omitempty"`
	// ExecutionCount is the number of runs the interpreter has executed.
	ExecutionCount int `json:"executionCount"`
}

// CodeContextList is the body of GET /v1/sandboxes/{id}/code/contexts.
type CodeContextList struct {
	Contexts []CodeContext `json:"contexts"`
}

// RunCodeRequest is the body of POST /v1/sandboxes/{id}/code/run and
// /code/run/stream.
type RunCodeRequest struct {
	// Code is the source to run (at most MaxCodeBytes). In Python and
	// JavaScript the value of a last expression becomes a result.
	Code string `json:"code"`
	// ContextID selects the context. Without it the default context of
	// Language is used, created on first use.
	ContextID string `json:"contextId,omitempty"`
	// Language is used only without ContextID: "python" (default),
	// "javascript" or "typescript". With ContextID it must be empty or
	// match the context's language.
	Language CodeLanguage `json:"language,omitempty"`
	// Timeout in milliseconds; 0 means DefaultCodeTimeout. At most 24h.
	// A run past it is interrupted (Python: KeyboardInterrupt; JavaScript:
	// the script is interrupted) and reports a TimeoutError; the context
	// keeps its state.
	Timeout int64 `json:"timeout,omitempty"`
}

// CodeResult is one rich output of a run: the value of the last
// expression, a display() call, or a matplotlib figure. It carries every
// representation the value offers; images are base64.
type CodeResult struct {
	Text     string `json:"text,omitempty"`
	HTML     string `json:"html,omitempty"`
	Markdown string `json:"markdown,omitempty"`
	LaTeX    string `json:"latex,omitempty"`
	// JSON is the value as JSON (an object, array or scalar).
	JSON       json.RawMessage `json:"json,omitempty"`
	JavaScript string          `json:"javascript,omitempty"`
	SVG        string          `json:"svg,omitempty"`
	PNG        string          `json:"png,omitempty"`
	JPEG       string          `json:"jpeg,omitempty"`
	// IsMainResult is true for the value of the run's last expression.
	IsMainResult bool `json:"isMainResult,omitempty"`
}

// Formats lists the representations r carries, in a fixed order.
func (r *CodeResult) Formats() []string {
	var out []string
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"text", r.Text != ""}, {"html", r.HTML != ""}, {"markdown", r.Markdown != ""},
		{"latex", r.LaTeX != ""}, {"json", len(r.JSON) > 0}, {"javascript", r.JavaScript != ""},
		{"svg", r.SVG != ""}, {"png", r.PNG != ""}, {"jpeg", r.JPEG != ""},
	} {
		if f.set {
			out = append(out, f.name)
		}
	}
	return out
}

// ExecutionError is an error raised by the code (not by the API): an
// exception in Python, a thrown value in JavaScript, a syntax error, or a
// TimeoutError for a run interrupted at its timeout.
type ExecutionError struct {
	// Name is the error's type, e.g. "ZeroDivisionError".
	Name string `json:"name"`
	// Value is its message, e.g. "division by zero".
	Value string `json:"value"`
	// Traceback holds the lines of the stack trace.
	Traceback []string `json:"traceback"`
}

// CodeLogs is the output a run printed.
type CodeLogs struct {
	// Stdout and Stderr are the output split into lines, without line
	// terminators.
	Stdout []string `json:"stdout"`
	Stderr []string `json:"stderr"`
}

// RunCodeResult is the body of a completed POST /code/run: the whole run
// aggregated.
type RunCodeResult struct {
	Code      string       `json:"code"`
	ContextID string       `json:"contextId"`
	Language  CodeLanguage `json:"language"`
	Logs      CodeLogs     `json:"logs"`
	Results   []CodeResult `json:"results"`
	// Error is set when the code raised an error.
	Error *ExecutionError `json:"error,omitempty"`
	// ExecutionCount is the context's count of executed runs, this one
	// included.
	ExecutionCount int `json:"executionCount"`
	// Duration is the run's time in milliseconds.
	Duration int64 `json:"duration"`
	// Truncated is set when output or results beyond MaxCodeOutputBytes
	// were dropped.
	Truncated bool `json:"truncated,omitempty"`
}

// Code run stream event types. A stream carries one start, then stdout,
// stderr, result and execution_error events in the order they happened,
// then exactly one terminal event (IsTerminal): complete, or error with a
// code (the run's fate is then an API error such as CONTEXT_TERMINATED).
// An error raised by the code itself is an execution_error event, which
// is followed by complete.
const (
	CodeEventStart          = "start"
	CodeEventStdout         = "stdout"
	CodeEventStderr         = "stderr"
	CodeEventResult         = "result"
	CodeEventExecutionError = "execution_error"
	CodeEventError          = "error"
	CodeEventComplete       = "complete"
)

// CodeEvent is one Server-Sent Event of a code run. The SSE event name
// equals Type.
type CodeEvent struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	// ContextID and Language are set on start.
	ContextID string       `json:"contextId,omitempty"`
	Language  CodeLanguage `json:"language,omitempty"`
	// Data is a chunk of output (stdout/stderr). Chunks never split a
	// UTF-8 character; non-UTF-8 chunks are base64 with Encoding set.
	Data     string `json:"data,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// Result is set on result.
	Result *CodeResult `json:"result,omitempty"`
	// Error is set on execution_error: the error the code raised.
	Error *ExecutionError `json:"error,omitempty"`
	// ExecutionCount, Duration (ms) and Truncated are set on complete.
	ExecutionCount int   `json:"executionCount,omitempty"`
	Duration       int64 `json:"duration,omitempty"`
	Truncated      bool  `json:"truncated,omitempty"`
	// Code and Message are set on error.
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Terminal reports whether ev ends its stream.
func (ev *CodeEvent) Terminal() bool { return IsTerminal(ev.Type) }
