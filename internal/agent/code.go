package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/interp"
	"github.com/sandboxd/sandboxd/internal/agent/reaper"
)

// The code interpreter's edge: routes under /code, their validation, and
// the conversion between interp's domain types and the wire types of
// api/code.go.

// Limits of code interpreter requests beyond those in api.
const (
	// maxCodeBody bounds a run request: the largest code, JSON-escaped in
	// the worst case (\u00XX for every byte), and the rest.
	maxCodeBody = 6*api.MaxCodeBytes + 64<<10
	// maxContextBody bounds a create request (env dominates).
	maxContextBody = 1 << 20
)

// codeDir is where the interpreter drivers are written, below the run
// directory. A leading '_' cannot start a session ID, so no session's
// directory can be this one.
const codeDir = "_code"

// newCodeManager makes the code interpreter's manager from the agent's
// configuration.
func newCodeManager(cfg *Config, shellEnv []string, r *reaper.Reaper) (*interp.Manager, error) {
	ic := cfg.Code
	ic.Dir = filepath.Join(cfg.RunDir, codeDir)
	ic.Workspace, ic.CgroupRoot, ic.Self = cfg.Workspace, cfg.CgroupRoot, cfg.Self
	if cfg.Transpiler != "" {
		ic.Transpiler = cfg.Transpiler
	}
	ic.BaseEnv, ic.Reaper, ic.Log = shellEnv, r, cfg.Log
	ic.MaxContexts = api.MaxCodeContexts
	ic.MaxOutputBytes = api.MaxCodeOutputBytes
	return interp.NewManager(ic)
}

// codeActivity adds the code runs queued or executing to the agent's
// activity report, so that a sandbox running code is not put to sleep.
func (s *server) codeActivity(a *api.AgentActivity) {
	if s.code != nil {
		a.RunningExecutions += s.code.Active()
	}
}

// languageOf validates a language field; empty means python.
func languageOf(l api.CodeLanguage) (interp.Language, *api.Error) {
	if l == "" {
		return interp.Python, nil
	}
	lang := interp.Language(l)
	if !lang.Valid() {
		return "", api.Errorf(api.CodeValidationFailed, "language must be %q, %q or %q", api.LanguagePython, api.LanguageJavaScript, api.LanguageTypeScript)
	}
	return lang, nil
}

// validateCodeContext checks a create request and converts it.
func validateCodeContext(req *api.CreateCodeContextRequest) (interp.Options, *api.Error) {
	invalid := func(format string, args ...any) (interp.Options, *api.Error) {
		return interp.Options{}, api.Errorf(api.CodeValidationFailed, format, args...)
	}
	lang, aerr := languageOf(req.Language)
	if aerr != nil {
		return interp.Options{}, aerr
	}
	switch {
	case len(req.Cwd) > maxCwd:
		return invalid("cwd exceeds %d bytes", maxCwd)
	case strings.IndexByte(req.Cwd, 0) >= 0:
		return invalid("cwd contains a NUL byte")
	case req.Cwd != "" && !filepath.IsAbs(req.Cwd):
		return invalid("cwd must be an absolute path")
	}
	if aerr := validateEnv(req.Env); aerr != nil {
		return interp.Options{}, aerr
	}
	o := interp.Options{Language: lang, Env: req.Env}
	if req.Cwd != "" {
		o.Cwd = filepath.Clean(req.Cwd)
	}
	return o, nil
}

func (s *server) createCodeContext(w http.ResponseWriter, r *http.Request) {
	var req api.CreateCodeContextRequest
	if aerr := decodeBody(w, r, maxContextBody, &req, true); aerr != nil {
		writeError(w, aerr)
		return
	}
	o, aerr := validateCodeContext(&req)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	c, err := s.code.Create(r.Context(), o)
	if err != nil {
		writeError(w, s.codeError(err))
		return
	}
	writeJSON(w, http.StatusCreated, contextWire(c.Info()))
}

func (s *server) listCodeContexts(w http.ResponseWriter, r *http.Request) {
	infos := s.code.List()
	out := api.CodeContextList{Contexts: make([]api.CodeContext, 0, len(infos))}
	for _, i := range infos {
		out.Contexts = append(out.Contexts, contextWire(i))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getCodeContext(w http.ResponseWriter, r *http.Request) {
	c, aerr := s.namedContext(r.PathValue("contextId"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, contextWire(c.Info()))
}

func (s *server) deleteCodeContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("contextId")
	if !interp.ValidID(id) {
		writeError(w, api.Errorf(api.CodeContextNotFound, "no code context %q", truncate(id, 64)))
		return
	}
	if err := s.code.Delete(id); err != nil {
		writeError(w, s.codeError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// namedContext returns the context id, or a CONTEXT_NOT_FOUND error.
func (s *server) namedContext(id string) (*interp.Context, *api.Error) {
	if !interp.ValidID(id) {
		return nil, api.Errorf(api.CodeContextNotFound, "no code context %q", truncate(id, 64))
	}
	c, err := s.code.Get(id)
	if err != nil {
		return nil, s.codeError(err)
	}
	return c, nil
}

func contextWire(i interp.Info) api.CodeContext {
	status := api.ContextReady
	if i.Terminated {
		status = api.ContextTerminated
	}
	return api.CodeContext{
		ID: i.ID, Language: api.CodeLanguage(i.Language), Cwd: i.Cwd, Status: status,
		CreatedAt: i.CreatedAt, LastUsed: i.LastUsed, Running: i.Running, ExecutionCount: i.ExecutionCount,
	}
}

// codeCall is a decoded and validated run request, with its context.
type codeCall struct {
	code    string
	timeout time.Duration
	ctx     *interp.Context
}

// decodeRun reads and validates a run request and finds (or, for a
// default context, creates) its context.
func (s *server) decodeRun(w http.ResponseWriter, r *http.Request) (codeCall, *api.Error) {
	var req api.RunCodeRequest
	if aerr := decodeBody(w, r, maxCodeBody, &req, false); aerr != nil {
		return codeCall{}, aerr
	}
	invalid := func(format string, args ...any) (codeCall, *api.Error) {
		return codeCall{}, api.Errorf(api.CodeValidationFailed, format, args...)
	}
	switch {
	case strings.TrimSpace(req.Code) == "":
		return invalid("code is empty")
	case len(req.Code) > api.MaxCodeBytes:
		return invalid("code exceeds %d bytes", api.MaxCodeBytes)
	case req.Timeout < 0 || req.Timeout > api.MaxTimeout.Milliseconds():
		return invalid("timeout must be between 0 and %d milliseconds", api.MaxTimeout.Milliseconds())
	}
	call := codeCall{code: req.Code, timeout: time.Duration(req.Timeout) * time.Millisecond}
	if call.timeout == 0 {
		call.timeout = api.DefaultCodeTimeout
	}
	if req.ContextID != "" {
		c, aerr := s.namedContext(req.ContextID)
		if aerr != nil {
			return codeCall{}, aerr
		}
		if req.Language != "" && interp.Language(req.Language) != c.Language() {
			return invalid("context %s runs %s, not %s", c.ID(), c.Language(), truncate(string(req.Language), 32))
		}
		call.ctx = c
		return call, nil
	}
	lang, aerr := languageOf(req.Language)
	if aerr != nil {
		return codeCall{}, aerr
	}
	c, err := s.code.Default(r.Context(), lang)
	if err != nil {
		return codeCall{}, s.codeError(err)
	}
	call.ctx = c
	return call, nil
}

// runCode runs code and answers with the whole result.
func (s *server) runCode(w http.ResponseWriter, r *http.Request) {
	call, aerr := s.decodeRun(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ticket, err := call.ctx.Enqueue()
	if err != nil {
		writeError(w, s.codeError(err))
		return
	}
	sink := &codeBuffer{}
	out, err := ticket.Run(r.Context(), call.code, call.timeout, sink)
	res := sink.result(call, out)
	if err != nil {
		aerr := s.codeError(err)
		aerr.Details = map[string]any{"logs": res.Logs, "results": res.Results}
		writeError(w, aerr)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// runCodeStream runs code and streams its events: start, then stdout,
// stderr, result and error as they happen, then complete, or an error
// event with a code. Errors found before the run is queued are plain JSON
// error responses.
func (s *server) runCodeStream(w http.ResponseWriter, r *http.Request) {
	call, aerr := s.decodeRun(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ticket, err := call.ctx.Enqueue()
	if err != nil {
		writeError(w, s.codeError(err))
		return
	}
	defer ticket.Release()
	ew := newEventWriter(w, s.writeTimeout)
	// Accepted: say so now and keep the stream alive, because the run may
	// wait behind a long one.
	w.WriteHeader(http.StatusOK)
	ew.rc.Flush()
	hb := startHeartbeat(s.keepalive, ew.lastWrite, ew.keepalive)
	defer hb.stop()
	sink := &codeStream{ew: ew}
	out, err := ticket.Run(r.Context(), call.code, call.timeout, sink)
	sink.flush()
	if !sink.began {
		sink.Begin(call.ctx)
	}
	if err != nil {
		aerr := s.codeError(err)
		sink.send(&api.CodeEvent{Type: api.CodeEventError, Code: aerr.Code, Message: aerr.Message})
		return
	}
	sink.send(&api.CodeEvent{
		Type: api.CodeEventComplete, ExecutionCount: out.ExecutionCount,
		Duration: out.Duration.Milliseconds(), Truncated: out.Truncated,
	})
}

// codeError classifies an error of the interp layer. Internal causes go
// to the log; the caller sees a safe message.
func (s *server) codeError(err error) *api.Error {
	var na *interp.NotAvailableError
	var cwd *interp.CwdError
	var start *interp.StartError
	switch {
	case errors.As(err, &na):
		code := api.CodePythonNotAvailable
		if na.Language != interp.Python {
			code = api.CodeJavaScriptNotAvailable
		}
		return api.Errorf(code, "%s", na.Error())
	case errors.As(err, &cwd):
		return api.Errorf(api.CodeValidationFailed, "cwd %s is not an existing directory", truncate(cwd.Dir, 256))
	case errors.Is(err, interp.ErrNotFound):
		return api.Errorf(api.CodeContextNotFound, "no such code context")
	case errors.Is(err, interp.ErrTerminated):
		return api.Errorf(api.CodeContextTerminated, "%s; the context lost its state: delete it and create a new one (a default context is replaced by the next run)", err.Error())
	case errors.Is(err, interp.ErrBusy):
		return api.Errorf(api.CodeContextBusy, "too many runs are queued on this code context")
	case errors.Is(err, interp.ErrLimit):
		return api.Errorf(api.CodeResourceExhausted, "too many code contexts (at most %d); delete one first", api.MaxCodeContexts)
	case errors.Is(err, interp.ErrClosed):
		return api.Errorf(api.CodeSandboxUnavailable, "the agent is shutting down")
	case errors.As(err, &start):
		s.log.Warn("code interpreter did not start", "language", start.Language)
		return api.Errorf(api.CodeInternal, "%s", start.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return api.Errorf(api.CodeSandboxUnavailable, "the call was aborted because its caller went away")
	}
	s.log.Error("code interpreter failed", "err", err)
	return api.Errorf(api.CodeInternal, "internal error in the sandbox agent")
}

// resultWire converts a result to the wire form.
func resultWire(r interp.Result) *api.CodeResult {
	out := &api.CodeResult{IsMainResult: r.Main}
	for mime, v := range r.Data {
		switch mime {
		case "text/plain":
			out.Text = v
		case "text/html":
			out.HTML = v
		case "text/markdown":
			out.Markdown = v
		case "text/latex":
			out.LaTeX = v
		case "application/json":
			if json.Valid([]byte(v)) {
				out.JSON = json.RawMessage(v)
			}
		case "application/javascript":
			out.JavaScript = v
		case "image/svg+xml":
			out.SVG = v
		case "image/png":
			out.PNG = v
		case "image/jpeg":
			out.JPEG = v
		}
	}
	return out
}

func errorWire(e interp.ExecError) *api.ExecutionError {
	tb := e.Traceback
	if tb == nil {
		tb = []string{}
	}
	return &api.ExecutionError{Name: e.Name, Value: e.Value, Traceback: tb}
}

// codeBuffer is the Sink of a buffered run.
type codeBuffer struct {
	lang           interp.Language
	id             string
	stdout, stderr []byte
	results        []api.CodeResult
	err            *api.ExecutionError
}

func (b *codeBuffer) Begin(c *interp.Context) { b.lang, b.id = c.Language(), c.ID() }

func (b *codeBuffer) Output(st interp.Stream, p []byte) error {
	if st == interp.Stderr {
		b.stderr = append(b.stderr, p...)
	} else {
		b.stdout = append(b.stdout, p...)
	}
	return nil
}

func (b *codeBuffer) Result(r interp.Result) error {
	b.results = append(b.results, *resultWire(r))
	return nil
}

func (b *codeBuffer) Error(e interp.ExecError) error {
	b.err = errorWire(e)
	return nil
}

func (b *codeBuffer) result(call codeCall, out interp.Outcome) api.RunCodeResult {
	res := api.RunCodeResult{
		Code:           call.code,
		ContextID:      call.ctx.ID(),
		Language:       api.CodeLanguage(call.ctx.Language()),
		Logs:           api.CodeLogs{Stdout: logLines(b.stdout), Stderr: logLines(b.stderr)},
		Results:        b.results,
		Error:          b.err,
		ExecutionCount: out.ExecutionCount,
		Duration:       out.Duration.Milliseconds(),
		Truncated:      out.Truncated,
	}
	if res.Results == nil {
		res.Results = []api.CodeResult{}
	}
	return res
}

// logLines splits output into lines without their terminators; bytes
// that are not UTF-8 become U+FFFD.
func logLines(p []byte) []string {
	s := strings.ToValidUTF8(string(p), "\uFFFD")
	lines := strings.Split(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// codeStream is the Sink of a streamed run: every call becomes an event
// at once. Output chunks never end inside a UTF-8 character (an
// incomplete trailing sequence waits for the next chunk of its stream);
// a chunk that is not UTF-8 is sent base64-encoded.
type codeStream struct {
	ew    *eventWriter
	began bool
	runes runeHolder
}

func (o *codeStream) send(ev *api.CodeEvent) error {
	ev.Timestamp = now()
	return o.ew.write(func() error { return o.ew.sse.Send(ev.Type, ev) })
}

func (o *codeStream) Begin(c *interp.Context) {
	o.began = true
	o.send(&api.CodeEvent{Type: api.CodeEventStart, ContextID: c.ID(), Language: api.CodeLanguage(c.Language())})
}

func (o *codeStream) Output(st interp.Stream, p []byte) error {
	data := o.runes.next(int(st), p)
	if len(data) == 0 {
		return o.ew.err()
	}
	return o.chunk(st, data)
}

// flush sends what is held back, as it is.
func (o *codeStream) flush() {
	for _, st := range []interp.Stream{interp.Stdout, interp.Stderr} {
		if rest := o.runes.rest(int(st)); len(rest) > 0 {
			o.chunk(st, rest)
		}
	}
}

func (o *codeStream) chunk(st interp.Stream, p []byte) error {
	ev := api.CodeEvent{Type: api.CodeEventStdout}
	if st == interp.Stderr {
		ev.Type = api.CodeEventStderr
	}
	if utf8.Valid(p) {
		ev.Data = string(p)
	} else {
		ev.Data = base64.StdEncoding.EncodeToString(p)
		ev.Encoding = api.EncodingBase64
	}
	return o.send(&ev)
}

func (o *codeStream) Result(r interp.Result) error {
	o.flush() // output printed before the result goes first
	return o.send(&api.CodeEvent{Type: api.CodeEventResult, Result: resultWire(r)})
}

func (o *codeStream) Error(e interp.ExecError) error {
	o.flush()
	return o.send(&api.CodeEvent{Type: api.CodeEventExecutionError, Error: errorWire(e)})
}
