package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/process"
	"github.com/sandboxd/sandboxd/internal/agent/session"
	"github.com/sandboxd/sandboxd/internal/agent/user"
)

// processWire describes a process on the wire.
func processWire(info process.Info) api.Process {
	return api.Process{
		ID: info.ID, PID: info.PID, Command: info.Command, Status: api.ProcessStatus(info.Status),
		SessionID: info.SessionID, User: info.User, StartTime: info.StartTime, EndTime: info.EndTime,
		ExitCode: info.ExitCode, StatusReason: info.Reason, AutoCleanup: info.AutoCleanup, Truncated: info.Truncated,
	}
}

func (s *server) startProcess(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.startRequested(w, r); ok {
		writeJSON(w, http.StatusCreated, processWire(p.Info()))
	}
}

// startProcessStream starts a process as POST /processes does and streams
// its log as GET /processes/{pid}/logs/stream does, in one call: what a
// caller that follows every process it starts (the E2B layer) would
// otherwise spend a second round trip through the daemon on.
func (s *server) startProcessStream(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.startRequested(w, r); ok {
		s.followProcess(w, r, p)
	}
}

// startRequested starts the process a start request describes, or answers
// why not.
func (s *server) startRequested(w http.ResponseWriter, r *http.Request) (*process.Proc, bool) {
	var req api.StartProcessRequest
	if e := decodeBody(w, r, maxExecBody, &req, false); e != nil {
		writeError(w, e)
		return nil, false
	}
	invalid := func(format string, args ...any) {
		writeError(w, api.Errorf(api.CodeValidationFailed, format, args...))
	}
	switch {
	case strings.TrimSpace(req.Command) == "":
		invalid("command is empty")
		return nil, false
	case len(req.Command) > api.MaxCommandBytes:
		invalid("command exceeds %d bytes", api.MaxCommandBytes)
		return nil, false
	case strings.IndexByte(req.Command, 0) >= 0:
		invalid("command contains a NUL byte")
		return nil, false
	case req.ProcessID != "" && !session.ValidID(req.ProcessID):
		invalid("processId must be 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit")
		return nil, false
	}
	if req.SessionID == "" {
		req.SessionID = session.Default
	}
	if !session.ValidID(req.SessionID) {
		writeError(w, api.Errorf(api.CodeSessionNotFound, "no such session"))
		return nil, false
	}
	for _, e := range []*api.Error{validateEnv(req.Env), validateCwd(req.Cwd), validateUser(req.User), validateTimeout("timeout", req.Timeout)} {
		if e != nil {
			writeError(w, e)
			return nil, false
		}
	}
	sess, err := s.sessions.Get(req.SessionID)
	if err != nil {
		writeError(w, s.apiError(err))
		return nil, false
	}
	acct := sess.Account()
	if req.User != "" {
		acct = nil
		if req.User != "root" {
			a, err := s.users.Ensure(req.User)
			if err != nil {
				writeError(w, s.apiError(err))
				return nil, false
			}
			acct = &a
		}
	}
	cwd := req.Cwd
	if cwd == "" {
		cwd = sess.Cwd()
	}
	s.pids.Check()
	p, err := s.processes.Start(r.Context(), process.StartOptions{
		ID: req.ProcessID, Command: req.Command, Env: sess.Environ(acct, req.Env), Cwd: cwd,
		SessionID: req.SessionID, Account: acct, AutoCleanup: req.AutoCleanup, Login: req.Login,
		Timeout: time.Duration(req.Timeout) * time.Millisecond, CloseStdin: req.CloseStdin,
	})
	if err != nil {
		writeError(w, s.apiError(err))
		return nil, false
	}
	// Its record must outlive an agent crash from the answer on: it is
	// saved once the process runs (the save costs the command nothing
	// before it runs), and a process whose record could not be saved is
	// killed and forgotten.
	if err := s.state.saveStart(p.Info()); err != nil {
		s.processes.Remove(p.ID())
		writeError(w, s.saveError(err))
		return nil, false
	}
	return p, true
}

// loginRequest prepares the agent for login processes of a user in its
// home with the default session's environment (what the E2B layer's
// commands are): the account is created and the fork server started, so
// that neither is on the first command's time. The daemon sends it to a
// warm pool's sandbox before the sandbox joins the pool. It answers once
// the fork server is ready, or, when there can be none (its profile
// prints), once the account exists.
func (s *server) loginRequest(w http.ResponseWriter, r *http.Request) {
	var req api.AgentLoginRequest
	if e := decodeBody(w, r, maxSmallBody, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if e := validateUser(req.User); e != nil || req.User == "" {
		writeError(w, api.Errorf(api.CodeValidationFailed, "user must be root or a name of [a-z_][a-z0-9_-]*, at most %d characters", api.MaxUserNameLength))
		return
	}
	sess, err := s.sessions.Get(session.Default)
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	var acct *user.Account
	cwd := "/root"
	if req.User != "root" {
		a, err := s.users.Ensure(req.User)
		if err != nil {
			writeError(w, s.apiError(err))
			return
		}
		acct, cwd = &a, a.Home
	}
	s.processes.PrepareLogin(r.Context(), process.StartOptions{Env: sess.Environ(acct, nil), Cwd: cwd, Account: acct, Login: true})
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) listProcesses(w http.ResponseWriter, r *http.Request) {
	status := r.URL.Query().Get("status")
	if status != "" {
		switch api.ProcessStatus(status) {
		case api.ProcessStarting, api.ProcessRunning, api.ProcessCompleted, api.ProcessFailed, api.ProcessKilled, api.ProcessError:
		default:
			writeError(w, api.Errorf(api.CodeValidationFailed, "status must be one of starting, running, completed, failed, killed, error"))
			return
		}
	}
	out := api.ProcessList{Processes: []api.Process{}}
	for _, p := range s.processes.List() {
		info := p.Info()
		if status == "" || string(info.Status) == status {
			out.Processes = append(out.Processes, processWire(info))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// pathProcess returns the process named in the path, or answers the error.
func (s *server) pathProcess(w http.ResponseWriter, r *http.Request) (*process.Proc, bool) {
	id := r.PathValue("pid")
	if !session.ValidID(id) {
		writeError(w, api.Errorf(api.CodeProcessNotFound, "no such process"))
		return nil, false
	}
	p, err := s.processes.Get(id)
	if err != nil {
		writeError(w, s.apiError(err))
		return nil, false
	}
	return p, true
}

func (s *server) getProcess(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.pathProcess(w, r); ok {
		writeJSON(w, http.StatusOK, processWire(p.Info()))
	}
}

func (s *server) removeProcess(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pathProcess(w, r)
	if !ok {
		return
	}
	if err := s.processes.Remove(p.ID()); err != nil {
		writeError(w, s.apiError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodeKill reads a kill request: the signal and the grace period.
func decodeKill(w http.ResponseWriter, r *http.Request) (unix.Signal, time.Duration, bool) {
	var req api.KillProcessRequest
	if e := decodeBody(w, r, maxSmallBody, &req, true); e != nil {
		writeError(w, e)
		return 0, 0, false
	}
	sig := unix.SIGTERM
	if req.Signal != "" {
		n, ok := process.ParseSignal(req.Signal)
		if !ok || len(req.Signal) > 16 {
			writeError(w, api.Errorf(api.CodeValidationFailed, "signal %q is not a signal name or number", truncate(req.Signal, 16)))
			return 0, 0, false
		}
		sig = unix.Signal(n)
	}
	if req.GracePeriod < 0 || req.GracePeriod > api.MaxKillGrace.Milliseconds() {
		writeError(w, api.Errorf(api.CodeValidationFailed, "gracePeriod must be between 0 and %d milliseconds", api.MaxKillGrace.Milliseconds()))
		return 0, 0, false
	}
	grace := time.Duration(req.GracePeriod) * time.Millisecond
	if grace == 0 {
		grace = api.DefaultKillGrace
	}
	return sig, grace, true
}

func (s *server) killProcess(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pathProcess(w, r)
	if !ok {
		return
	}
	sig, grace, ok := decodeKill(w, r)
	if !ok {
		return
	}
	// The kill goes on if the caller leaves: a half-done escalation would
	// leave a process that ignores SIGTERM running.
	p.Kill(context.WithoutCancel(r.Context()), sig, grace, "signal "+unix.SignalName(sig))
	writeJSON(w, http.StatusOK, processWire(p.Info()))
}

func (s *server) killAllProcesses(w http.ResponseWriter, r *http.Request) {
	sig, grace, ok := decodeKill(w, r)
	if !ok {
		return
	}
	n := s.processes.KillAll(context.WithoutCancel(r.Context()), sig, grace, "signal "+unix.SignalName(sig))
	writeJSON(w, http.StatusOK, api.KillAllResult{Killed: n})
}

func (s *server) processLogs(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.pathProcess(w, r); ok {
		s.writeLogs(w, p)
	}
}

// streamProcessLogs streams process_info, the output so far, live output,
// then exactly one exit (or an error if the agent shuts down first). The
// reader never affects the process: a reader that falls behind loses what
// the log no longer holds, and one that leaves only closes its stream.
func (s *server) streamProcessLogs(w http.ResponseWriter, r *http.Request) {
	if p, ok := s.pathProcess(w, r); ok {
		s.followProcess(w, r, p)
	}
}

// followProcess streams p's log events: see streamProcessLogs.
func (s *server) followProcess(w http.ResponseWriter, r *http.Request, p *process.Proc) {
	f, err := p.Follow()
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	defer f.Close()
	ew := newEventWriter(w, s.writeTimeout)
	info := processWire(p.Info())
	if ew.sendEvent(api.EventProcessInfo, &api.ProcessEvent{Type: api.EventProcessInfo, Timestamp: now(), Process: &info}) != nil {
		return
	}
	hb := startHeartbeat(s.keepalive, ew.lastWrite, ew.keepalive)
	defer hb.stop()
	var held [2][]byte
	send := func(st process.Stream, data []byte) error {
		ev := api.ProcessEvent{Type: st.String(), Timestamp: now()}
		if utf8.Valid(data) {
			ev.Data = string(data)
		} else {
			ev.Data, ev.Encoding = base64.StdEncoding.EncodeToString(data), api.EncodingBase64
		}
		return ew.sendEvent(ev.Type, &ev)
	}
	for {
		c, err := f.Next(r.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if r.Context().Err() == nil {
				ew.sendEvent(api.EventError, &api.ProcessEvent{Type: api.EventError, Timestamp: now(),
					Code: api.CodeInternal, Message: "reading the process's log failed"})
				s.log.Error("reading process log", "process", p.ID(), "err", err)
			}
			return
		}
		// A chunk never ends inside a UTF-8 character: hold back an
		// incomplete tail until the stream's next chunk.
		data := append(held[c.Stream], c.Data...)
		cut := len(data) - partialRuneLen(data)
		if cut > 0 {
			if send(c.Stream, data[:cut]) != nil {
				return
			}
		}
		held[c.Stream] = append([]byte(nil), data[cut:]...)
	}
	for st, data := range held {
		if len(data) > 0 && send(process.Stream(st), data) != nil {
			return
		}
	}
	info = processWire(p.Info())
	ew.sendEvent(api.EventExit, &api.ProcessEvent{Type: api.EventExit, Timestamp: now(), Process: &info,
		ExitCode: info.ExitCode, Status: info.Status})
}

func readyTimeout(ms int64) time.Duration {
	if ms == 0 {
		return api.DefaultReadyTimeout
	}
	return time.Duration(ms) * time.Millisecond
}

// readyError answers a failed readiness wait.
func (s *server) readyError(w http.ResponseWriter, p *process.Proc, err error, timeout time.Duration) {
	switch {
	case errors.Is(err, process.ErrTimeout):
		writeError(w, &api.Error{Code: api.CodeProcessReadyTimeout,
			Message: "the process was not ready within " + timeout.String(),
			Details: map[string]any{"process": processWire(p.Info())}})
	case errors.Is(err, process.ErrExitedBeforeReady):
		writeError(w, &api.Error{Code: api.CodeProcessExitedBeforeReady,
			Message: "the process ended before it was ready",
			Details: map[string]any{"process": processWire(p.Info())}})
	case errors.Is(err, context.Canceled):
		// The caller left; nobody reads the answer.
	default:
		writeError(w, s.apiError(err))
	}
}

func (s *server) waitForLog(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pathProcess(w, r)
	if !ok {
		return
	}
	var req api.WaitForLogRequest
	if e := decodeBody(w, r, maxSmallBody, &req, false); e != nil {
		writeError(w, e)
		return
	}
	if req.Pattern == "" || len(req.Pattern) > api.MaxPatternBytes {
		writeError(w, api.Errorf(api.CodeValidationFailed, "pattern must be 1 to %d bytes", api.MaxPatternBytes))
		return
	}
	if e := validateTimeout("timeout", req.Timeout); e != nil {
		writeError(w, e)
		return
	}
	match, err := process.NewMatcher(req.Pattern, req.Regex)
	if err != nil {
		writeError(w, api.Errorf(api.CodeValidationFailed, "pattern is not a valid regular expression: %s", err))
		return
	}
	timeout := readyTimeout(req.Timeout)
	line, st, err := p.WaitForLog(r.Context(), match, timeout)
	if err != nil {
		s.readyError(w, p, err, timeout)
		return
	}
	writeJSON(w, http.StatusOK, api.WaitForLogResult{Line: strings.ToValidUTF8(line, "\uFFFD"), Stream: st.String()})
}

func (s *server) waitForPort(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pathProcess(w, r)
	if !ok {
		return
	}
	var req api.WaitForPortRequest
	if e := decodeBody(w, r, maxSmallBody, &req, false); e != nil {
		writeError(w, e)
		return
	}
	invalid := func(format string, args ...any) {
		writeError(w, api.Errorf(api.CodeValidationFailed, format, args...))
	}
	c := process.PortCheck{Port: req.Port, Path: req.Path, StatusMin: req.StatusMin, StatusMax: req.StatusMax,
		Timeout: readyTimeout(req.Timeout), Interval: time.Duration(req.Interval) * time.Millisecond}
	switch req.Mode {
	case "", api.PortModeTCP:
	case api.PortModeHTTP:
		c.HTTP = true
	default:
		invalid("mode must be %q or %q", api.PortModeTCP, api.PortModeHTTP)
		return
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.StatusMin == 0 {
		c.StatusMin = 200
	}
	if c.StatusMax == 0 {
		c.StatusMax = 399
	}
	if c.Interval == 0 {
		c.Interval = 100 * time.Millisecond
	}
	switch {
	case req.Port < 1 || req.Port > 65535:
		invalid("port must be between 1 and 65535")
		return
	case !strings.HasPrefix(c.Path, "/") || len(c.Path) > 2048 || strings.ContainsAny(c.Path, " \r\n\x00"):
		invalid("path must start with / and be at most 2048 bytes without spaces or line breaks")
		return
	case c.StatusMin < 100 || c.StatusMax > 599 || c.StatusMin > c.StatusMax:
		invalid("statusMin and statusMax must be a range within 100-599")
		return
	case c.Interval < 10*time.Millisecond || c.Interval > time.Minute:
		invalid("interval must be between 10 and 60000 milliseconds")
		return
	}
	if e := validateTimeout("timeout", req.Timeout); e != nil {
		writeError(w, e)
		return
	}
	status, err := p.WaitForPort(r.Context(), c)
	if err != nil {
		s.readyError(w, p, err, c.Timeout)
		return
	}
	writeJSON(w, http.StatusOK, api.WaitForPortResult{Port: req.Port, Status: status})
}

func (s *server) waitForExit(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pathProcess(w, r)
	if !ok {
		return
	}
	var req api.WaitForExitRequest
	if e := decodeBody(w, r, maxSmallBody, &req, true); e != nil {
		writeError(w, e)
		return
	}
	if e := validateTimeout("timeout", req.Timeout); e != nil {
		writeError(w, e)
		return
	}
	timeout := readyTimeout(req.Timeout)
	if err := p.WaitForExit(r.Context(), timeout); err != nil {
		s.readyError(w, p, err, timeout)
		return
	}
	writeJSON(w, http.StatusOK, processWire(p.Info()))
}

func (s *server) processStdin(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pathProcess(w, r)
	if !ok {
		return
	}
	var req api.StdinRequest
	if e := decodeBody(w, r, maxExecBody, &req, false); e != nil {
		writeError(w, e)
		return
	}
	var data []byte
	switch req.Encoding {
	case "", api.EncodingUTF8:
		data = []byte(req.Data)
	case api.EncodingBase64:
		var err error
		if data, err = base64.StdEncoding.DecodeString(req.Data); err != nil {
			writeError(w, api.Errorf(api.CodeValidationFailed, "data is not valid base64"))
			return
		}
	default:
		writeError(w, api.Errorf(api.CodeValidationFailed, "encoding must be %q or %q", api.EncodingUTF8, api.EncodingBase64))
		return
	}
	if len(data) > api.MaxStdinBytes {
		writeError(w, api.Errorf(api.CodeValidationFailed, "data exceeds %d bytes", api.MaxStdinBytes))
		return
	}
	if e := validateTimeout("timeout", req.Timeout); e != nil {
		writeError(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout(req.Timeout))
	defer cancel()
	n, err := p.WriteStdin(ctx, data, req.Close)
	if errors.Is(err, process.ErrTimeout) {
		writeError(w, &api.Error{Code: api.CodeProcessStdinTimeout,
			Message: "the process did not read its stdin in time", Details: map[string]any{"written": n}})
		return
	}
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	writeJSON(w, http.StatusOK, api.StdinResult{Written: n, Closed: req.Close})
}
