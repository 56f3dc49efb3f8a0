package mcpserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// Defaults of Options.
const (
	// DefaultOutputBytes is how much of one output stream (a command's
	// stdout, say) a result carries: its first quarter and last three
	// quarters are kept, the middle is replaced by a note.
	DefaultOutputBytes = 32 << 10
	// DefaultExecTimeout applies to exec calls that set no
	// timeout_seconds, so that a model's `sleep infinity` does not hold a
	// call forever.
	DefaultExecTimeout = 5 * time.Minute
	// DefaultSessionTimeout closes HTTP sessions that sent nothing for
	// this long (a call in progress keeps its session open).
	DefaultSessionTimeout = 30 * time.Minute
)

// Bounds that are not options.
const (
	// maxImageBytes bounds one image in a result (a chart, or a file read
	// as an image).
	maxImageBytes = 4 << 20
	// maxResultBytes bounds the images and texts of one run_code result
	// together; later outputs are replaced by a note.
	maxResultBytes = 8 << 20
	// maxListEntries bounds a list_files or list_sandboxes answer.
	maxListEntries = 500
	// maxProgressBytes bounds the output one call streams as progress
	// notifications; the result still carries its bounded view.
	maxProgressBytes = 1 << 20
	// maxProgressChunk bounds the text of one progress notification.
	maxProgressChunk = 16 << 10
	// maxMessageBytes bounds one message from a client (a write_file
	// call is the largest).
	maxMessageBytes = 20 << 20
	// spoolDir is where full output that did not fit in a result is
	// written, inside the sandbox.
	spoolDir = "/tmp/sandboxd-mcp"
)

// Options configure a server. Every field is optional.
type Options struct {
	// Version is reported to clients as the server's version.
	Version string
	// OutputBytes bounds each output stream in a result (default
	// DefaultOutputBytes).
	OutputBytes int
	// Log receives the server's own diagnostics (default: discarded).
	// Tool errors go to the calling model, not here.
	Log *slog.Logger
}

// server holds what the tool handlers share.
type server struct {
	c    *client.Client
	opts Options
}

// New returns an MCP server whose tools act through c. The same server
// may serve any number of sessions, on any transport.
func New(c *client.Client, opts Options) *mcp.Server {
	if opts.OutputBytes <= 0 {
		opts.OutputBytes = DefaultOutputBytes
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	ms := mcp.NewServer(&mcp.Implementation{Name: "sandboxd", Title: "sandboxd", Version: opts.Version}, &mcp.ServerOptions{
		Instructions: instructions,
		Logger:       opts.Log,
	})
	s := &server{c: c, opts: opts}
	s.addTools(ms)
	ms.AddReceivingMiddleware(codeValidationErrors)
	return ms
}

// instructions tell the model what the tools are for.
const instructions = `sandboxd runs code in isolated Linux sandboxes. Every tool takes the sandbox's ID as "sandbox" (1-63 of a-z, 0-9 and '-'): the first call naming an ID creates that sandbox, later calls reuse it, and files and shell state (cd, export) persist between calls. Long output is cut to its start and end; the note in the result names the file in the sandbox that holds all of it.`

// HTTPHandler serves the server over the streamable HTTP transport. It
// keeps sessions in memory and closes those idle for
// DefaultSessionTimeout. Authentication is the caller's business: wrap it.
func HTTPHandler(ms *mcp.Server, log *slog.Logger) http.Handler {
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return ms }, &mcp.StreamableHTTPOptions{
		SessionTimeout: DefaultSessionTimeout,
		// The SDK's DNS-rebinding guard refuses requests that reach a
		// loopback address with another Host, which is what a reverse
		// proxy in front of the daemon sends. The bearer token, which a
		// rebinding page cannot add, already stops those attacks.
		DisableLocalhostProtection: true,
		MaxRequestBodyBytes:        maxMessageBytes,
		Logger:                     log,
	})
}

// ServeIO serves one session of newline-delimited JSON-RPC (the stdio
// transport) on r and w until the client closes r or ctx ends.
func ServeIO(ctx context.Context, ms *mcp.Server, r io.ReadCloser, w io.WriteCloser) error {
	err := ms.Run(ctx, &mcp.IOTransport{Reader: r, Writer: w, MaxLineLength: maxMessageBytes})
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}

// CodeUnavailable is the code of tool errors where the daemon could not
// be reached or a stream broke before its end; CodeCancelled of calls the
// client cancelled. Every other tool error carries the daemon's code (see
// docs/api.md), or VALIDATION_FAILED for arguments the schema refused.
const (
	CodeUnavailable api.Code = "UNAVAILABLE"
	CodeCancelled   api.Code = "CANCELLED"
)

// errorOf returns the stable code and a message for err.
func errorOf(err error) (api.Code, string) {
	var e *client.Error
	switch {
	case errors.As(err, &e) && e.Code != "":
		return e.Code, e.Message
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return CodeCancelled, err.Error()
	case errors.Is(err, client.ErrUnavailable):
		// The SDK says "unavailable: <cause>"; the code already says the first part.
		return CodeUnavailable, strings.TrimPrefix(err.Error(), client.ErrUnavailable.Error()+": ")
	case errors.Is(err, client.ErrUnauthorized):
		return api.CodeUnauthorized, err.Error()
	}
	return api.CodeInternal, err.Error()
}

// toolError is the MCP tool error for err: the text "CODE: message" for
// the model, and {"error": {"code", "message"}} as structured content for
// programs. extra, if any, is added to both (output captured before a
// timeout, say).
func toolError(err error, extra ...mcp.Content) *mcp.CallToolResult {
	code, msg := errorOf(err)
	return codedError(code, msg, extra...)
}

func codedError(code api.Code, msg string, extra ...mcp.Content) *mcp.CallToolResult {
	return &mcp.CallToolResult{
		IsError:           true,
		Content:           append([]mcp.Content{&mcp.TextContent{Text: string(code) + ": " + msg}}, extra...),
		StructuredContent: map[string]any{"error": errorBody{Code: code, Message: msg}},
	}
}

type errorBody struct {
	Code    api.Code `json:"code"`
	Message string   `json:"message"`
}

// codeValidationErrors gives the tool errors the SDK makes itself
// (arguments its schema check refused) the code VALIDATION_FAILED, like
// every other tool error: they are the error results without structured
// content, which every handler here sets.
func codeValidationErrors(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		r, ok := res.(*mcp.CallToolResult)
		if err != nil || !ok || !r.IsError || r.StructuredContent != nil {
			return res, err
		}
		msg := "invalid arguments"
		if len(r.Content) > 0 {
			if t, ok := r.Content[0].(*mcp.TextContent); ok {
				msg = t.Text
			}
		}
		return codedError(api.CodeValidationFailed, msg), nil
	}
}
