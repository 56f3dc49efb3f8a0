package mcpserver

import (
	"context"
	"fmt"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// result is a successful tool result: text for the model, structured
// content for programs.
func result(text string, structured any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}, StructuredContent: structured}
}

// sandboxSummary is how a sandbox appears in results.
type sandboxSummary struct {
	ID      string            `json:"id"`
	Status  string            `json:"status"`
	Image   string            `json:"image"`
	Network string            `json:"network,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Created bool              `json:"created,omitempty"`
}

func summarize(sb *api.Sandbox) sandboxSummary {
	return sandboxSummary{ID: sb.ID, Status: string(sb.Status), Image: sb.Image, Network: string(sb.Network.Mode),
		Labels: sb.Labels, Created: sb.Created}
}

func (s *server) createSandbox(ctx context.Context, req *mcp.CallToolRequest, in createArgs) (*mcp.CallToolResult, any, error) {
	var opts []client.SandboxOption
	if in.Image != "" {
		opts = append(opts, client.WithImage(in.Image))
	}
	if len(in.Env) > 0 {
		opts = append(opts, client.WithEnv(in.Env))
	}
	if len(in.Labels) > 0 {
		opts = append(opts, client.WithLabels(in.Labels))
	}
	if in.Network != "" {
		opts = append(opts, client.WithNetwork(api.NetworkOptions{Mode: api.NetworkMode(in.Network)}))
	}
	newProgress(ctx, req).status("creating sandbox " + in.Sandbox)
	info, err := s.c.Sandbox(in.Sandbox, opts...).Ensure(ctx)
	if err != nil {
		return toolError(err), nil, nil
	}
	sum := summarize(info)
	verb := "exists (its settings are unchanged)"
	if info.Created {
		verb = "created"
	}
	return result(fmt.Sprintf("sandbox %s %s: status %s, image %s", info.ID, verb, info.Status, info.Image), sum), nil, nil
}

func (s *server) listSandboxes(ctx context.Context, _ *mcp.CallToolRequest, _ listArgs) (*mcp.CallToolResult, any, error) {
	list, err := s.c.List(ctx)
	if err != nil {
		return toolError(err), nil, nil
	}
	out := struct {
		Sandboxes []sandboxSummary `json:"sandboxes"`
		Total     int              `json:"total"`
	}{Sandboxes: []sandboxSummary{}, Total: len(list)}
	var b strings.Builder
	for i := range list {
		if i == maxListEntries {
			fmt.Fprintf(&b, "[... %d more sandboxes not shown ...]\n", len(list)-i)
			break
		}
		sum := summarize(&list[i])
		out.Sandboxes = append(out.Sandboxes, sum)
		fmt.Fprintf(&b, "%s\t%s\t%s\n", sum.ID, sum.Status, sum.Image)
	}
	if len(list) == 0 {
		b.WriteString("no sandboxes\n")
	}
	return result(b.String(), out), nil, nil
}

func (s *server) destroySandbox(ctx context.Context, _ *mcp.CallToolRequest, in sandboxArgs) (*mcp.CallToolResult, any, error) {
	if err := s.c.Sandbox(in.Sandbox).Destroy(ctx); err != nil {
		return toolError(err), nil, nil
	}
	return result("sandbox "+in.Sandbox+" destroyed", map[string]any{"id": in.Sandbox, "destroyed": true}), nil, nil
}
