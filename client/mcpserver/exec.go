package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// execResult is exec's structured content.
type execResult struct {
	ExitCode   int    `json:"exit_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	DurationMS int64  `json:"duration_ms"`
	// StdoutFile and StderrFile hold the whole stream when it was cut.
	StdoutFile string   `json:"stdout_file,omitempty"`
	StderrFile string   `json:"stderr_file,omitempty"`
	Notes      []string `json:"notes,omitempty"`
}

// outputs is the bounded capture of a call's two streams.
type outputs struct {
	stdout, stderr *capture
}

func (s *server) newOutputs(ctx context.Context, sb *client.Sandbox, tool string) *outputs {
	tag := newTag(tool)
	return &outputs{
		stdout: newCapture(ctx, sb, tag, "stdout", s.opts.OutputBytes),
		stderr: newCapture(ctx, sb, tag, "stderr", s.opts.OutputBytes),
	}
}

// finish ends both captures and fills r's output fields.
func (o *outputs) finish(r *execResult) {
	var note string
	r.Stdout, note = o.stdout.finish()
	if note != "" {
		r.Notes = append(r.Notes, note)
	}
	r.Stderr, note = o.stderr.finish()
	if note != "" {
		r.Notes = append(r.Notes, note)
	}
	r.StdoutFile, r.StderrFile = o.stdout.path(), o.stderr.path()
}

// text renders r for the model.
func (r *execResult) text(status string) string {
	var b strings.Builder
	b.WriteString(status + "\n")
	if r.Stdout != "" {
		b.WriteString("--- stdout ---\n" + r.Stdout)
		if !strings.HasSuffix(r.Stdout, "\n") {
			b.WriteString("\n")
		}
	}
	if r.Stderr != "" {
		b.WriteString("--- stderr ---\n" + r.Stderr)
		if !strings.HasSuffix(r.Stderr, "\n") {
			b.WriteString("\n")
		}
	}
	for _, n := range r.Notes {
		b.WriteString("note: " + n + "\n")
	}
	return b.String()
}

func (s *server) exec(ctx context.Context, req *mcp.CallToolRequest, in execArgs) (*mcp.CallToolResult, any, error) {
	timeout := DefaultExecTimeout
	if in.TimeoutSeconds > 0 {
		timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}
	opts := []client.ExecOption{client.WithTimeout(timeout)}
	if in.Cwd != "" {
		opts = append(opts, client.WithCwd(in.Cwd))
	}
	if len(in.Env) > 0 {
		opts = append(opts, client.WithEnv(in.Env))
	}
	sb := s.c.Sandbox(in.Sandbox)
	st, err := sb.ExecStream(ctx, in.Command, opts...)
	if err != nil {
		return toolError(err), nil, nil
	}
	defer st.Close()
	out := s.newOutputs(ctx, sb, "exec")
	prog := newProgress(ctx, req)
	res := &execResult{ExitCode: -1}
	var streamErr error
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			streamErr = err
			break
		}
		switch ev.Type {
		case api.EventStdout:
			out.stdout.write([]byte(ev.Data))
			prog.output("stdout", []byte(ev.Data))
		case api.EventStderr:
			out.stderr.write([]byte(ev.Data))
			prog.output("stderr", []byte(ev.Data))
		case api.EventComplete:
			res.ExitCode, res.DurationMS = *ev.ExitCode, ev.Duration
		}
	}
	st.Close()
	out.finish(res)
	if streamErr != nil {
		// A timeout, a dead session, a lost stream: the error, with what
		// the command printed until then.
		code, msg := errorOf(streamErr)
		if code == api.CodeCommandTimeout {
			msg = fmt.Sprintf("the command ran past its timeout of %s and was killed", timeout)
		}
		r := codedError(code, msg, &mcp.TextContent{Text: res.text("output before the error:")})
		r.StructuredContent = map[string]any{"error": errorBody{Code: code, Message: msg}, "output": res}
		return r, nil, nil
	}
	return result(res.text(fmt.Sprintf("exit code: %d", res.ExitCode)), res), nil, nil
}
