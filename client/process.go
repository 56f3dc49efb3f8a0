package client

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// ErrExitedBeforeReady: PROCESS_EXITED_BEFORE_READY, a readiness wait on a
// process that ended first.
var ErrExitedBeforeReady = errors.New("process exited before it was ready")

// ProcessOption sets an option of StartProcess.
type ProcessOption interface {
	applyProcess(*api.StartProcessRequest)
}

type processOptionFunc func(*api.StartProcessRequest)

func (f processOptionFunc) applyProcess(r *api.StartProcessRequest) { f(r) }

func (e EnvOption) applyProcess(r *api.StartProcessRequest) { r.Env = mergeMap(r.Env, e) }
func (d CwdOption) applyProcess(r *api.StartProcessRequest) { r.Cwd = string(d) }
func (d TimeoutOption) applyProcess(r *api.StartProcessRequest) {
	r.Timeout = roundMillis(time.Duration(d))
}
func (id InSessionOption) applyProcess(r *api.StartProcessRequest) { r.SessionID = string(id) }

// WithProcessID names the process (default: generated). IDs are unique in
// a sandbox: an existing one fails with an error matching ErrConflict
// (PROCESS_EXISTS).
func WithProcessID(id string) ProcessOption {
	return processOptionFunc(func(r *api.StartProcessRequest) { r.ProcessID = id })
}

// AsLogin runs the command as a login shell (bash -l -c): the login
// profile runs first, in the same shell.
func AsLogin() ProcessOption {
	return processOptionFunc(func(r *api.StartProcessRequest) { r.Login = true })
}

// WithAutoCleanup removes the process's record and logs a while
// (api.AutoCleanupAfter) after it ends.
func WithAutoCleanup() ProcessOption {
	return processOptionFunc(func(r *api.StartProcessRequest) { r.AutoCleanup = true })
}

// Process is a handle to a background process. Its embedded api.Process
// is the record as of the call that returned the handle (or the last
// Refresh); ID is always set.
type Process struct {
	sb *Sandbox
	api.Process
}

// StartProcess starts command (a shell command line) in the background and
// returns at once with its record: {ID, PID, Command, Status, StartTime,
// SessionID}. The process outlives the call and the client's connection.
func (s *Sandbox) StartProcess(ctx context.Context, command string, opts ...ProcessOption) (*Process, error) {
	req := api.StartProcessRequest{Command: command}
	for _, o := range opts {
		o.applyProcess(&req)
	}
	switch {
	case command == "":
		return nil, invalidf(api.CodeValidationFailed, "command is empty")
	case len(command) > api.MaxCommandBytes:
		return nil, invalidf(api.CodeValidationFailed, "command is %d bytes; at most %d are allowed", len(command), api.MaxCommandBytes)
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	p := &Process{sb: s}
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/processes"), &req, &p.Process); err != nil {
		return nil, err
	}
	return p, nil
}

// Process returns a handle to the process id without any I/O; call
// Refresh to load its record.
func (s *Sandbox) Process(id string) *Process {
	return &Process{sb: s, Process: api.Process{ID: id}}
}

// GetProcess returns the process's handle with its current record
// (ErrNotFound: PROCESS_NOT_FOUND).
func (s *Sandbox) GetProcess(ctx context.Context, id string) (*Process, error) {
	p := s.Process(id)
	if err := p.Refresh(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// ListProcesses returns the sandbox's process records, oldest first; with
// a status, only those in it.
func (s *Sandbox) ListProcesses(ctx context.Context, status ...api.ProcessStatus) ([]api.Process, error) {
	if len(status) > 1 {
		return nil, invalidf(api.CodeValidationFailed, "at most one status")
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	path := sandboxPath(s.id, "/processes")
	if len(status) == 1 {
		path += "?status=" + url.QueryEscape(string(status[0]))
	}
	var out api.ProcessList
	if err := s.c.doJSON(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out.Processes, nil
}

// KillOption tunes a kill.
type KillOption func(*api.KillProcessRequest)

// WithGracePeriod sets how long a process may take to exit after SIGTERM
// before its tree gets SIGKILL (default api.DefaultKillGrace).
func WithGracePeriod(d time.Duration) KillOption {
	return func(r *api.KillProcessRequest) { r.GracePeriod = roundMillis(d) }
}

// KillProcess sends signal ("SIGTERM", "KILL", "9"...; "" is SIGTERM) to
// the process's whole tree and returns its record. SIGTERM and SIGKILL
// return once the process has ended; SIGTERM escalates to SIGKILL after
// the grace period.
func (s *Sandbox) KillProcess(ctx context.Context, id, signal string, opts ...KillOption) (*api.Process, error) {
	p := s.Process(id)
	if err := p.Kill(ctx, signal, opts...); err != nil {
		return nil, err
	}
	return &p.Process, nil
}

// KillAllProcesses kills every running process as KillProcess does
// (signal "" is SIGTERM) and returns how many were running.
func (s *Sandbox) KillAllProcesses(ctx context.Context, signal string, opts ...KillOption) (int, error) {
	req := api.KillProcessRequest{Signal: signal}
	for _, o := range opts {
		o(&req)
	}
	if err := s.prepare(ctx); err != nil {
		return 0, err
	}
	var out api.KillAllResult
	if err := s.c.doJSON(ctx, http.MethodDelete, sandboxPath(s.id, "/processes"), &req, &out); err != nil {
		return 0, err
	}
	return out.Killed, nil
}

// ProcessLogs is a process's stored output, decoded.
type ProcessLogs struct {
	Stdout, Stderr []byte
	// Truncated: a stream went past api.MaxLogBytes; its middle is gone.
	Truncated bool
}

// GetProcessLogs returns the process's stored output.
func (s *Sandbox) GetProcessLogs(ctx context.Context, id string) (*ProcessLogs, error) {
	return s.Process(id).Logs(ctx)
}

// StreamProcessLogs streams the process's output; see Process.StreamLogs.
func (s *Sandbox) StreamProcessLogs(ctx context.Context, id string) (*LogStream, error) {
	return s.Process(id).StreamLogs(ctx)
}

func (p *Process) path(suffix string) string {
	return sandboxPath(p.sb.id, "/processes/"+url.PathEscape(p.ID)+suffix)
}

func (p *Process) do(ctx context.Context, method, suffix string, in, out any) error {
	if err := p.sb.prepare(ctx); err != nil {
		return err
	}
	return p.sb.c.doJSON(ctx, method, p.path(suffix), in, out)
}

// Refresh loads the process's current record.
func (p *Process) Refresh(ctx context.Context) error {
	var rec api.Process
	if err := p.do(ctx, http.MethodGet, "", nil, &rec); err != nil {
		return err
	}
	p.Process = rec
	return nil
}

// Kill signals the process's tree; see Sandbox.KillProcess. The handle's
// record is updated.
func (p *Process) Kill(ctx context.Context, signal string, opts ...KillOption) error {
	req := api.KillProcessRequest{Signal: signal}
	for _, o := range opts {
		o(&req)
	}
	var rec api.Process
	if err := p.do(ctx, http.MethodPost, "/kill", &req, &rec); err != nil {
		return err
	}
	p.Process = rec
	return nil
}

// Remove kills the process if it runs and deletes its record and logs.
func (p *Process) Remove(ctx context.Context) error {
	return p.do(ctx, http.MethodDelete, "", nil, nil)
}

// Logs returns the stored output.
func (p *Process) Logs(ctx context.Context) (*ProcessLogs, error) {
	var wire api.ProcessLogs
	if err := p.do(ctx, http.MethodGet, "/logs", nil, &wire); err != nil {
		return nil, err
	}
	out := &ProcessLogs{Stdout: []byte(wire.Stdout), Stderr: []byte(wire.Stderr), Truncated: wire.Truncated}
	if wire.Encoding == api.EncodingBase64 {
		var err1, err2 error
		out.Stdout, err1 = base64.StdEncoding.DecodeString(wire.Stdout)
		out.Stderr, err2 = base64.StdEncoding.DecodeString(wire.Stderr)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("decoding logs: %w", err)
		}
	}
	return out, nil
}

// WaitForLog waits, in the sandbox, until a line of the process's output
// (what it printed so far included) contains pattern, and returns that
// line. It fails with ErrExitedBeforeReady if the process ends first and
// with ErrTimeout after timeout (0: api.DefaultReadyTimeout).
func (p *Process) WaitForLog(ctx context.Context, pattern string, timeout time.Duration) (string, error) {
	return p.waitForLog(ctx, api.WaitForLogRequest{Pattern: pattern, Timeout: roundMillis(timeout)})
}

// WaitForLogRegexp is WaitForLog with a regular expression (RE2 syntax,
// matched by the agent).
func (p *Process) WaitForLogRegexp(ctx context.Context, re *regexp.Regexp, timeout time.Duration) (string, error) {
	return p.waitForLog(ctx, api.WaitForLogRequest{Pattern: re.String(), Regex: true, Timeout: roundMillis(timeout)})
}

func (p *Process) waitForLog(ctx context.Context, req api.WaitForLogRequest) (string, error) {
	var out api.WaitForLogResult
	if err := p.do(ctx, http.MethodPost, "/wait/log", &req, &out); err != nil {
		return "", err
	}
	return out.Line, nil
}

// PortCheck tunes WaitForPort; the zero value waits for a TCP connection
// with the default timeout.
type PortCheck struct {
	// HTTP waits for an answer to GET Path with a status in
	// [StatusMin, StatusMax] (default 200-399) instead of a connection.
	HTTP                 bool
	Path                 string
	StatusMin, StatusMax int
	// Timeout (0: api.DefaultReadyTimeout) and Interval between attempts
	// (0: 100ms).
	Timeout, Interval time.Duration
}

// WaitForPort waits, in the sandbox, until port accepts connections (or
// answers HTTP, per check). It fails with ErrExitedBeforeReady if the
// process ends first and with ErrTimeout after the timeout. It returns the
// HTTP status in HTTP mode.
func (p *Process) WaitForPort(ctx context.Context, port int, check PortCheck) (int, error) {
	req := api.WaitForPortRequest{Port: port, Path: check.Path, StatusMin: check.StatusMin, StatusMax: check.StatusMax,
		Timeout: roundMillis(check.Timeout), Interval: roundMillis(check.Interval)}
	if check.HTTP {
		req.Mode = api.PortModeHTTP
	}
	var out api.WaitForPortResult
	if err := p.do(ctx, http.MethodPost, "/wait/port", &req, &out); err != nil {
		return 0, err
	}
	return out.Status, nil
}

// WaitForExit waits for the process to end (at most timeout; 0:
// api.DefaultReadyTimeout) and returns its exit code, -1 when it has none
// (it could not start, or was lost in an agent restart). The handle's
// record is updated.
func (p *Process) WaitForExit(ctx context.Context, timeout time.Duration) (int, error) {
	var rec api.Process
	if err := p.do(ctx, http.MethodPost, "/wait/exit", &api.WaitForExitRequest{Timeout: roundMillis(timeout)}, &rec); err != nil {
		return -1, err
	}
	p.Process = rec
	if rec.ExitCode == nil {
		return -1, nil
	}
	return *rec.ExitCode, nil
}

// WriteStdin writes data to the process's stdin (at most
// api.MaxStdinBytes a call). It fails with an error matching ErrTimeout
// (PROCESS_STDIN_TIMEOUT) if the process does not take it within 30s.
func (p *Process) WriteStdin(ctx context.Context, data []byte) error {
	return p.stdin(ctx, data, false)
}

// CloseStdin closes the process's stdin: it reads EOF.
func (p *Process) CloseStdin(ctx context.Context) error { return p.stdin(ctx, nil, true) }

func (p *Process) stdin(ctx context.Context, data []byte, closeAfter bool) error {
	if len(data) > api.MaxStdinBytes {
		return invalidf(api.CodeValidationFailed, "stdin is %d bytes; at most %d are allowed a call", len(data), api.MaxStdinBytes)
	}
	req := api.StdinRequest{Data: base64.StdEncoding.EncodeToString(data), Encoding: api.EncodingBase64, Close: closeAfter}
	return p.do(ctx, http.MethodPost, "/stdin", &req, nil)
}

// LogStream is the live output of a process: a process_info event, the
// output so far, live output, then exactly one exit event. Closing it (or
// cancelling its context) never affects the process.
type LogStream struct {
	eventStream
}

// StreamLogs opens the process's log stream. The caller must Close it.
func (p *Process) StreamLogs(ctx context.Context) (*LogStream, error) {
	if err := p.sb.prepare(ctx); err != nil {
		return nil, err
	}
	path := p.path("/logs/stream")
	resp, err := p.sb.c.send(ctx, http.MethodGet, path, nil, sse.ContentType)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != sse.ContentType {
		closeBody(resp.Body)
		return nil, fmt.Errorf("GET %s: answer is not an event stream", path)
	}
	return &LogStream{newEventStream("log stream", ctx, resp.Body)}, nil
}

// Next returns the next event; output chunks carry raw bytes in Data
// (Encoding empty). After the exit event it returns io.EOF. An error
// event is returned with an *Error; a stream cut before exit gives an
// error matching ErrUnavailable.
func (ls *LogStream) Next() (api.ProcessEvent, error) {
	var ev api.ProcessEvent
	name, err := ls.next(&ev)
	if err != nil {
		return api.ProcessEvent{}, err
	}
	ev.Type = name
	switch name {
	case api.EventStdout, api.EventStderr:
		if err := ls.decodeChunk(&ev.Data, &ev.Encoding); err != nil {
			return api.ProcessEvent{}, err
		}
	case api.EventError:
		return ev, &Error{Code: ev.Code, Message: ev.Message}
	case api.EventExit:
	default:
		if api.IsTerminal(name) {
			return api.ProcessEvent{}, ls.fail(fmt.Errorf("log stream ended with %q: %w", name, ErrUnavailable))
		}
	}
	return ev, nil
}
