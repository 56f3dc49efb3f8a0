// Package mcpserver serves sandboxd to AI agents over the Model Context
// Protocol: a fixed set of tools (create_sandbox, exec, run_code, files,
// processes, ports) that a model can call safely. It is built on the
// official Go SDK (github.com/modelcontextprotocol/go-sdk) and implements
// every tool once, over the Go SDK of sandboxd (package client), so the
// same tools serve both transports: `sandbox mcp` runs them on stdio with
// a client of a remote daemon, and the daemon's /mcp route runs them over
// the streamable HTTP transport with a client of itself.
//
// What it owns: the tools' names, argument names and JSON schemas (inputs
// are validated before a handler runs), the bounds on what a result
// carries (long output is cut to its start and end with a note, and the
// full output is written to a file in the sandbox), and the mapping of
// errors to MCP tool errors carrying the daemon's stable codes. It must
// never import anything under internal/: like package client, it is
// public and talks to a daemon only through the HTTP API.
package mcpserver
