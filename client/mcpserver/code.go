package mcpserver

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// codeResult is run_code's structured content. Images are not repeated
// here: they are the result's image blocks.
type codeResult struct {
	Language       string              `json:"language"`
	ContextID      string              `json:"context_id"`
	Stdout         string              `json:"stdout"`
	Stderr         string              `json:"stderr"`
	Results        []codeOutput        `json:"results"`
	ExecutionError *api.ExecutionError `json:"execution_error,omitempty"`
	ExecutionCount int                 `json:"execution_count"`
	DurationMS     int64               `json:"duration_ms"`
	StdoutFile     string              `json:"stdout_file,omitempty"`
	StderrFile     string              `json:"stderr_file,omitempty"`
	Notes          []string            `json:"notes,omitempty"`
}

// codeOutput is one rich output of a run, as far as it fits.
type codeOutput struct {
	Text  string   `json:"text,omitempty"`
	HTML  string   `json:"html,omitempty"`
	Image string   `json:"image,omitempty"` // MIME type of the image block
	Main  bool     `json:"is_main_result,omitempty"`
	Kinds []string `json:"formats"`
}

// codeContent turns a run's rich outputs into MCP content: charts (PNG,
// JPEG) become images, tables and other HTML become text/html resources
// beside their plain text, everything within maxResultBytes.
type codeContent struct {
	sandbox string
	blocks  []mcp.Content
	outputs []codeOutput
	size    int
	limit   int // bound of one text representation
	notes   []string
}

func (cc *codeContent) add(r api.CodeResult) {
	n := len(cc.outputs) + 1
	out := codeOutput{Main: r.IsMainResult, Kinds: r.Formats()}
	if img, mt := imageOf(r); img != nil {
		switch {
		case len(img) > maxImageBytes || cc.size+len(img) > maxResultBytes:
			cc.notes = append(cc.notes, fmt.Sprintf("output %d: a %s image of %d bytes is too large to return; save it to a file (e.g. plt.savefig) and read that", n, mt, len(img)))
		default:
			cc.size += len(img)
			out.Image = mt
			cc.blocks = append(cc.blocks, &mcp.ImageContent{Data: img, MIMEType: mt})
		}
	}
	text := firstOf(r.Text, r.Markdown, string(r.JSON), r.LaTeX)
	if text != "" && cc.fits(n, "text", text) {
		out.Text = text
		cc.blocks = append(cc.blocks, &mcp.TextContent{Text: text})
	}
	if r.HTML != "" && cc.fits(n, "HTML", r.HTML) {
		out.HTML = r.HTML
		cc.blocks = append(cc.blocks, &mcp.EmbeddedResource{Resource: &mcp.ResourceContents{
			URI:      fmt.Sprintf("sandboxd://%s/code/output-%d.html", cc.sandbox, n),
			MIMEType: "text/html",
			Text:     r.HTML,
		}})
	}
	cc.outputs = append(cc.outputs, out)
}

// fits reports whether a text representation fits in the result, and
// notes why not.
func (cc *codeContent) fits(n int, what, text string) bool {
	if len(text) > cc.limit || cc.size+len(text) > maxResultBytes {
		cc.notes = append(cc.notes, fmt.Sprintf("output %d: its %s (%d bytes) is too large to return; write it to a file and read parts of it", n, what, len(text)))
		return false
	}
	cc.size += len(text)
	return true
}

// imageOf returns the first bitmap image of r, decoded, with its type.
func imageOf(r api.CodeResult) ([]byte, string) {
	for _, im := range []struct{ data, mt string }{{r.PNG, "image/png"}, {r.JPEG, "image/jpeg"}} {
		if im.data == "" {
			continue
		}
		if b, err := base64.StdEncoding.DecodeString(im.data); err == nil {
			return b, im.mt
		}
	}
	return nil, ""
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (s *server) runCode(ctx context.Context, req *mcp.CallToolRequest, in runCodeArgs) (*mcp.CallToolResult, any, error) {
	o := client.RunCodeOptions{Language: api.CodeLanguage(in.Language)}
	if o.Language == "" {
		o.Language = api.LanguagePython
	}
	if in.TimeoutSeconds > 0 {
		o.Timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}
	sb := s.c.Sandbox(in.Sandbox)
	st, err := sb.RunCodeStream(ctx, in.Code, o)
	if err != nil {
		return toolError(err), nil, nil
	}
	defer st.Close()
	out := s.newOutputs(ctx, sb, "run_code")
	prog := newProgress(ctx, req)
	cc := &codeContent{sandbox: in.Sandbox, limit: s.opts.OutputBytes}
	res := &codeResult{Language: string(o.Language)}
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
		case api.CodeEventStart:
			res.ContextID = ev.ContextID
		case api.CodeEventStdout:
			out.stdout.write([]byte(ev.Data))
			prog.output("stdout", []byte(ev.Data))
		case api.CodeEventStderr:
			out.stderr.write([]byte(ev.Data))
			prog.output("stderr", []byte(ev.Data))
		case api.CodeEventResult:
			cc.add(*ev.Result)
		case api.CodeEventExecutionError:
			e := *ev.Error
			res.ExecutionError = &e
		case api.CodeEventComplete:
			res.ExecutionCount, res.DurationMS = ev.ExecutionCount, ev.Duration
			if ev.Truncated {
				cc.notes = append(cc.notes, fmt.Sprintf("the run's output went past %d bytes; the rest was dropped", api.MaxCodeOutputBytes))
			}
		}
	}
	st.Close()
	var er execResult
	out.finish(&er)
	res.Stdout, res.Stderr, res.StdoutFile, res.StderrFile = er.Stdout, er.Stderr, er.StdoutFile, er.StderrFile
	res.Results = cc.outputs
	res.Notes = append(er.Notes, cc.notes...)
	text := res.text()
	if streamErr != nil {
		code, msg := errorOf(streamErr)
		r := codedError(code, msg, append([]mcp.Content{&mcp.TextContent{Text: text}}, cc.blocks...)...)
		r.StructuredContent = map[string]any{"error": errorBody{Code: code, Message: msg}, "output": res}
		return r, nil, nil
	}
	return &mcp.CallToolResult{Content: append([]mcp.Content{&mcp.TextContent{Text: text}}, cc.blocks...), StructuredContent: res}, nil, nil
}

// text renders the run's printed output and error for the model; rich
// outputs follow as their own blocks.
func (r *codeResult) text() string {
	var b strings.Builder
	if r.ExecutionError != nil {
		fmt.Fprintf(&b, "the code raised %s: %s\n", r.ExecutionError.Name, r.ExecutionError.Value)
	} else {
		fmt.Fprintf(&b, "ran in %s context %s (run %d)\n", r.Language, r.ContextID, r.ExecutionCount)
	}
	if r.Stdout != "" {
		b.WriteString("--- stdout ---\n" + strings.TrimSuffix(r.Stdout, "\n") + "\n")
	}
	if r.Stderr != "" {
		b.WriteString("--- stderr ---\n" + strings.TrimSuffix(r.Stderr, "\n") + "\n")
	}
	if r.ExecutionError != nil && len(r.ExecutionError.Traceback) > 0 {
		tb := strings.Join(r.ExecutionError.Traceback, "\n")
		if len(tb) > 8<<10 {
			tb = "...\n" + tb[len(tb)-8<<10:]
		}
		b.WriteString("--- traceback ---\n" + tb + "\n")
	}
	if n := len(r.Results); n > 0 {
		fmt.Fprintf(&b, "%d output(s) follow\n", n)
	}
	for _, n := range r.Notes {
		b.WriteString("note: " + n + "\n")
	}
	return b.String()
}
