package mcpserver

import (
	"context"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// processSummary is how a background process appears in results.
type processSummary struct {
	ID       string `json:"process_id"`
	PID      int    `json:"pid"`
	Command  string `json:"command"`
	Status   string `json:"status"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Reason   string `json:"status_reason,omitempty"`
}

func summarizeProcess(p *api.Process) processSummary {
	return processSummary{ID: p.ID, PID: p.PID, Command: p.Command, Status: string(p.Status), ExitCode: p.ExitCode, Reason: p.StatusReason}
}

func (p processSummary) line() string {
	s := fmt.Sprintf("process %s (pid %d): %s", p.ID, p.PID, p.Status)
	if p.ExitCode != nil {
		s += fmt.Sprintf(", exit code %d", *p.ExitCode)
	}
	if p.Reason != "" {
		s += " (" + p.Reason + ")"
	}
	return s
}

func (s *server) startProcess(ctx context.Context, _ *mcp.CallToolRequest, in startProcessArgs) (*mcp.CallToolResult, any, error) {
	var opts []client.ProcessOption
	if in.ProcessID != "" {
		opts = append(opts, client.WithProcessID(in.ProcessID))
	}
	if in.Cwd != "" {
		opts = append(opts, client.WithCwd(in.Cwd))
	}
	if len(in.Env) > 0 {
		opts = append(opts, client.WithEnv(in.Env))
	}
	p, err := s.c.Sandbox(in.Sandbox).StartProcess(ctx, in.Command, opts...)
	if err != nil {
		return toolError(err), nil, nil
	}
	sum := summarizeProcess(&p.Process)
	return result(sum.line()+"\nread its output with process_logs, stop it with kill_process", sum), nil, nil
}

func (s *server) processLogs(ctx context.Context, _ *mcp.CallToolRequest, in processArgs) (*mcp.CallToolResult, any, error) {
	sb := s.c.Sandbox(in.Sandbox)
	p, err := sb.GetProcess(ctx, in.ProcessID)
	if err != nil {
		return toolError(err), nil, nil
	}
	logs, err := sb.GetProcessLogs(ctx, in.ProcessID)
	if err != nil {
		return toolError(err), nil, nil
	}
	// The logs pass through the same bounded view as exec's output, so
	// long logs are cut and written whole to a file of the sandbox.
	out := s.newOutputs(ctx, sb, "logs-"+in.ProcessID)
	out.stdout.write(logs.Stdout)
	out.stderr.write(logs.Stderr)
	var er execResult
	out.finish(&er)
	if logs.Truncated {
		er.Notes = append(er.Notes, fmt.Sprintf("the process wrote more than the daemon keeps (%d bytes a stream); the middle of its output is gone", api.MaxLogBytes))
	}
	sum := summarizeProcess(&p.Process)
	res := struct {
		processSummary
		Stdout     string   `json:"stdout"`
		Stderr     string   `json:"stderr"`
		StdoutFile string   `json:"stdout_file,omitempty"`
		StderrFile string   `json:"stderr_file,omitempty"`
		Notes      []string `json:"notes,omitempty"`
	}{sum, er.Stdout, er.Stderr, er.StdoutFile, er.StderrFile, er.Notes}
	return result(er.text(sum.line()), res), nil, nil
}

func (s *server) killProcess(ctx context.Context, _ *mcp.CallToolRequest, in killProcessArgs) (*mcp.CallToolResult, any, error) {
	p, err := s.c.Sandbox(in.Sandbox).KillProcess(ctx, in.ProcessID, in.Signal)
	if err != nil {
		return toolError(err), nil, nil
	}
	sum := summarizeProcess(p)
	return result(sum.line(), sum), nil, nil
}

func (s *server) exposePort(ctx context.Context, _ *mcp.CallToolRequest, in exposePortArgs) (*mcp.CallToolResult, any, error) {
	var opts []client.ExposeOption
	if in.Name != "" {
		opts = append(opts, client.WithPortName(in.Name))
	}
	p, err := s.c.Sandbox(in.Sandbox).ExposePort(ctx, in.Port, opts...)
	if err != nil {
		return toolError(err), nil, nil
	}
	return result(fmt.Sprintf("port %d of %s is at %s", p.Port, in.Sandbox, p.URL),
		map[string]any{"port": p.Port, "url": p.URL, "name": p.Name}), nil, nil
}
