package agent

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/interp"
	"github.com/sandboxd/sandboxd/internal/agent/pidguard"
	"github.com/sandboxd/sandboxd/internal/agent/process"
	"github.com/sandboxd/sandboxd/internal/agent/pty"
	"github.com/sandboxd/sandboxd/internal/agent/session"
	"github.com/sandboxd/sandboxd/internal/agent/user"
	"github.com/sandboxd/sandboxd/internal/agentapi"
)

// server holds the HTTP handlers.
type server struct {
	log         *slog.Logger
	version     string
	sessions    *session.Manager
	processes   *process.Manager
	state       *stateStore
	users       *user.DB
	code        *interp.Manager
	terminals   *pty.Manager
	termEnvMu   sync.Mutex
	termBaseEnv []string // the environment of terminals outside sessions
	workspace   string
	files       *fileService // files, watches and git (files_api.go)
	// pids recovers the sandbox from a detached fork bomb before a
	// command or process starts.
	pids         *pidguard.Guard
	keepalive    time.Duration
	writeTimeout time.Duration // for one stream event to be accepted by the client
	// started is closed when the agent's start-up work is done (Agent.Run):
	// the default session's shell runs, the image's main command started.
	started chan struct{}
	// shutdown stops the agent, giving the reason (set by Agent.Run).
	shutdown func(reason string)
	// suspend lets go of the agent's socket before a gVisor checkpoint
	// (suspend.go); nil when the socket was inherited.
	suspend func() error
	// activity lists what can keep the sandbox busy on its own; each
	// source adds its counts (background processes, code runs).
	activity []func(*api.AgentActivity)

	// named is set once a name from the daemon was applied (takeName);
	// namer, on gVisor, is where the namer tells how the sandbox's naming
	// went (namer.go), nil once read.
	nameMu sync.Mutex
	named  bool
	namer  *namerLink
}

// handlers maps each route of agentapi.Routes, by pattern, to its handler.
// The table of routes and what the daemon may do with them is agentapi's;
// this is only who serves them.
func (s *server) handlers() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"GET " + agentapi.PathHealth:        s.health,
		"GET " + agentapi.PathActivity:      s.activityReport,
		"POST " + agentapi.PathShutdown:     s.shutdownRequest,
		"GET " + agentapi.PathDial:          s.dialPort,
		"POST " + agentapi.PathSuspend:      s.suspendRequest,
		"POST " + agentapi.PathFork:         s.forkRequest,
		"GET " + agentapi.PathReady:         s.readyRequest,
		"POST " + agentapi.PathLogin:        s.loginRequest,
		"POST /exec":                        s.exec,
		"POST /exec/stream":                 s.execStream,
		"GET /env":                          s.getSandboxEnv,
		"POST /env":                         s.setSandboxEnv,
		"POST /sessions":                    s.createSession,
		"GET /sessions":                     s.listSessions,
		"GET /sessions/{sid}":               s.getSession,
		"DELETE /sessions/{sid}":            s.deleteSession,
		"POST /sessions/{sid}/env":          s.setSessionEnv,
		"POST /processes":                   s.startProcess,
		"POST /processes/start/stream":      s.startProcessStream,
		"GET /processes":                    s.listProcesses,
		"DELETE /processes":                 s.killAllProcesses,
		"GET /processes/{pid}":              s.getProcess,
		"DELETE /processes/{pid}":           s.removeProcess,
		"POST /processes/{pid}/kill":        s.killProcess,
		"GET /processes/{pid}/logs":         s.processLogs,
		"GET /processes/{pid}/logs/stream":  s.streamProcessLogs,
		"POST /processes/{pid}/wait/log":    s.waitForLog,
		"POST /processes/{pid}/wait/port":   s.waitForPort,
		"POST /processes/{pid}/wait/exit":   s.waitForExit,
		"POST /processes/{pid}/stdin":       s.processStdin,
		"POST /code/contexts":               s.createCodeContext,
		"GET /code/contexts":                s.listCodeContexts,
		"GET /code/contexts/{contextId}":    s.getCodeContext,
		"DELETE /code/contexts/{contextId}": s.deleteCodeContext,
		"POST /code/run":                    s.runCode,
		"POST /code/run/stream":             s.runCodeStream,
		"GET /terminal":                     s.terminal,
		"GET /terminals":                    s.listTerminals,
		"DELETE /terminals/{terminal}":      s.closeTerminal,
		// Files, watches and git: files_api.go.
		"POST /files/write":       s.writeFile,
		"POST /files/read":        s.readFile,
		"POST /files/read/stream": s.readStream,
		"GET /files/raw":          s.readRaw,
		"PUT /files/raw":          s.writeRaw,
		"POST /files/mkdir":       s.mkdir,
		"POST /files/delete":      s.deleteFile,
		"POST /files/rename":      s.rename,
		"POST /files/move":        s.move,
		"POST /files/exists":      s.exists,
		"POST /files/stat":        s.stat,
		"POST /files/list":        s.listFiles,
		"GET /files/archive":      s.exportArchive,
		"PUT /files/archive":      s.importArchive,
		"POST /files/watch":       s.watchFiles,
		"POST /files/changes":     s.checkChanges,
		"POST /git/checkout":      s.gitCheckout,
	}
}

// routes serves agentapi.Routes with the handlers. Method-qualified
// patterns serve a route; a bare pattern per path answers other methods
// with a JSON 405, and "/" answers unknown paths with a JSON 404. A route
// without a handler, or a handler without a route, is a build defect:
// routes panics (every test of the agent starts one).
func (s *server) routes() http.Handler {
	handlers := s.handlers()
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	var paths []string
	for _, r := range agentapi.Routes {
		h := handlers[r.Pattern()]
		if h == nil {
			panic("agent: no handler for route " + r.Pattern())
		}
		delete(handlers, r.Pattern())
		mux.HandleFunc(r.Pattern(), h)
		if allowed[r.Path] == nil {
			paths = append(paths, r.Path)
		}
		allowed[r.Path] = append(allowed[r.Path], r.Method)
	}
	for pattern := range handlers {
		panic("agent: handler for " + pattern + ", which agentapi.Routes does not declare")
	}
	for _, p := range paths {
		methods := allowed[p]
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		mux.HandleFunc(p, methodNotAllowed(strings.Join(methods, ", ")))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, api.Errorf(api.CodeNotFound, "no route %s", r.URL.Path))
	})
	return mux
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, api.Errorf(api.CodeMethodNotAllowed, "%s is not allowed here; use %s", r.Method, allow))
	}
}

// agentPID is the agent's process ID, which the health answer gives: asked
// once, since on gVisor every getpid is a trip through the Sentry (a
// quarter of the agent's system calls on a health call's way).
var agentPID = os.Getpid()

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.AgentHealth{
		ProtocolVersion: api.ProtocolVersion,
		Version:         s.version,
		PID:             agentPID,
	})
}

// shutdownRequest stops the agent the way SIGTERM does, but with a reason
// ("slept", "stopped") that the records of killed processes keep. The
// daemon calls it before stopping a sandbox's container; it is internal
// (agentapi), never forwarded from the public API.
func (s *server) shutdownRequest(w http.ResponseWriter, r *http.Request) {
	var body api.AgentShutdownRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil || body.Reason == "" || len(body.Reason) > 200 {
		writeError(w, api.Errorf(api.CodeValidationFailed, "body must be {\"reason\": \"...\"} with a reason of at most 200 bytes"))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"status": "shutting down"})
	if s.shutdown != nil {
		go s.shutdown(body.Reason)
	}
}

// readyRequest answers 204 once the agent's start-up work is done (Run
// ends it early when the agent stops). The daemon waits on it before a warm
// sandbox joins the pool, so that the sandbox's first command neither
// waits for the shell nor shares the CPU with the rest of the start-up.
func (s *server) readyRequest(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.started:
		w.WriteHeader(http.StatusNoContent)
	case <-r.Context().Done(): // the daemon gave up waiting
		writeError(w, api.Errorf(api.CodeSandboxUnavailable, "the agent is still starting"))
	}
}

// takeName applies the name the daemon sends in agentapi.NameHeader on
// its first calls to a warm sandbox it handed out: the sandbox's commands
// see it as HOSTNAME from this call on (the daemon sets the hostname and
// /etc files itself; on gVisor, when its namer is still at work, the call
// waits for it: see namer.go). It is applied before the call is served, so the
// call that created the sandbox already runs under its name, and once:
// an agent is handed out once, and a later header (a second call sent
// before the first was answered) must not undo what a call did to
// HOSTNAME meanwhile. It is not saved: the state file would cost a sync
// on the way of the sandbox's first call, and every later start of the
// container has the name in its own environment, below the sandbox
// layer. A later save keeps it anyway.
func (s *server) takeName(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if name := r.Header.Get(agentapi.NameHeader); name != "" {
			if aerr := s.applyName(r.Context(), name); aerr != nil {
				writeError(w, aerr)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// applyName sets HOSTNAME to name in the sandbox layer, unless a name was
// applied before, once the namer (if one is at work) is done.
func (s *server) applyName(ctx context.Context, name string) *api.Error {
	s.nameMu.Lock()
	defer s.nameMu.Unlock()
	if s.named {
		return nil
	}
	if len(name) > 253 {
		return api.Errorf(api.CodeValidationFailed, "%s must be a name of at most 253 bytes", agentapi.NameHeader)
	}
	l := session.Layer{"HOSTNAME": &name}
	if e := validateLayer(l); e != nil {
		return e
	}
	if s.namer != nil {
		err := s.namer.await(ctx)
		s.namer = nil
		if err != nil {
			s.log.Warn("naming the sandbox", "err", err)
			return api.Errorf(api.CodeSandboxUnavailable, "the sandbox could not be named")
		}
	}
	s.sessions.SetSandboxEnv(l)
	s.named = true
	return nil
}

// activityReport tells the daemon whether the sandbox is busy with work
// that no API call is waiting for, so that it is not put to sleep.
func (s *server) activityReport(w http.ResponseWriter, r *http.Request) {
	var a api.AgentActivity
	for _, add := range s.activity {
		add(&a)
	}
	a.Busy = a.RunningProcesses > 0 || a.RunningExecutions > 0
	writeJSON(w, http.StatusOK, a)
}

// exec runs a command and answers with its whole output.
func (s *server) exec(w http.ResponseWriter, r *http.Request) {
	call, aerr := decodeExecRequest(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	s.pids.Check()
	sess, err := s.sessions.Get(call.sessionID)
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	out := &bufferedOutput{limit: api.MaxBufferedOutputBytes}
	res, err := sess.Exec(r.Context(), call.cmd, out)
	stdout, stderr, enc := out.encode()
	if err != nil {
		aerr := s.apiError(err)
		if aerr.Code == api.CodeCommandTimeout || aerr.Code == api.CodeSessionTerminated {
			// What the command printed before it was killed or the shell
			// went away is the caller's best clue.
			aerr.Details = map[string]any{
				"stdout":   stdout,
				"stderr":   stderr,
				"encoding": enc,
				"duration": res.Duration.Milliseconds(),
				"exitCode": res.ExitCode,
			}
			if out.truncated {
				aerr.Details["truncated"] = true
			}
		}
		writeError(w, aerr)
		return
	}
	s.log.DebugContext(r.Context(), "exec", "session", call.sessionID, "exit", res.ExitCode, "took", res.Duration)
	writeJSON(w, http.StatusOK, api.ExecResult{
		Success:   res.ExitCode == 0,
		ExitCode:  res.ExitCode,
		Stdout:    stdout,
		Stderr:    stderr,
		Command:   call.command,
		SessionID: call.sessionID,
		Duration:  res.Duration.Milliseconds(),
		Encoding:  encodingField(enc),
		Truncated: out.truncated,
	})
}

// bufferedOutput collects a command's output up to limit bytes per
// stream. Beyond it the output is read and dropped, so the command never
// blocks on a full pipe, and truncated is set.
type bufferedOutput struct {
	limit          int
	stdout, stderr []byte
	truncated      bool
}

func (b *bufferedOutput) Begin() {}

func (b *bufferedOutput) Write(st session.Stream, p []byte) error {
	dst := &b.stdout
	if st == session.Stderr {
		dst = &b.stderr
	}
	if room := b.limit - len(*dst); len(p) > room {
		b.truncated = true
		p = p[:max(room, 0)]
	}
	*dst = append(*dst, p...)
	return nil
}

// encode returns both streams as text when both are valid UTF-8, and both
// base64-encoded otherwise, with the encoding name. A stream cut at the
// limit loses an incomplete trailing character rather than turning the
// whole output into base64.
func (b *bufferedOutput) encode() (stdout, stderr, encoding string) {
	out, errb := b.stdout, b.stderr
	if b.truncated {
		out = out[:len(out)-partialRuneLen(out)]
		errb = errb[:len(errb)-partialRuneLen(errb)]
	}
	if utf8.Valid(out) && utf8.Valid(errb) {
		return string(out), string(errb), api.EncodingUTF8
	}
	return base64.StdEncoding.EncodeToString(b.stdout), base64.StdEncoding.EncodeToString(b.stderr), api.EncodingBase64
}

// encodingField is the ExecResult.Encoding value: set only for base64.
func encodingField(enc string) string {
	if enc == api.EncodingBase64 {
		return enc
	}
	return ""
}

// partialRuneLen is the length of an incomplete UTF-8 sequence at the end
// of p (0-3 bytes): bytes that may still become a character when more
// output arrives.
func partialRuneLen(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				return len(p) - i
			}
			return 0
		}
	}
	return 0
}

// apiError classifies an error of the session layer. Internal causes go
// to the log; the caller sees a safe message.
func (s *server) apiError(err error) *api.Error {
	var timeout *session.TimeoutError
	var abort *session.AbortError
	switch {
	case errors.As(err, &timeout):
		return &api.Error{Code: api.CodeCommandTimeout, Message: timeout.Error()}
	case errors.Is(err, session.ErrStatusLost):
		return api.Errorf(api.CodeSessionTerminated, "the command removed or replaced the session's status FIFO, so its shell could not report the command's end; the shell was killed with the command, and the next command starts a fresh shell with the session's original options")
	case errors.Is(err, session.ErrTerminated):
		return api.Errorf(api.CodeSessionTerminated, "the session's shell exited during the command; the next command starts a fresh shell with the session's original options")
	case errors.Is(err, session.ErrNotFound):
		return api.Errorf(api.CodeSessionNotFound, "no such session")
	case errors.Is(err, session.ErrBusy):
		return api.Errorf(api.CodeSessionBusy, "too many commands are queued on this session")
	case errors.Is(err, session.ErrExists):
		return api.Errorf(api.CodeSessionExists, "the session already exists")
	case errors.Is(err, session.ErrLimit):
		return api.Errorf(api.CodeResourceExhausted, "too many sessions")
	case errors.Is(err, session.ErrClosed), errors.Is(err, process.ErrClosed):
		return api.Errorf(api.CodeSandboxUnavailable, "the agent is shutting down")
	case errors.Is(err, session.ErrUser), errors.Is(err, user.ErrInvalid):
		s.log.Warn("session user unavailable", "err", err)
		return api.Errorf(api.CodeValidationFailed, "the user could not be found or created in the sandbox")
	case errors.Is(err, process.ErrNotFound):
		return api.Errorf(api.CodeProcessNotFound, "no such process")
	case errors.Is(err, process.ErrExists):
		return api.Errorf(api.CodeProcessExists, "a process with this ID exists")
	case errors.Is(err, process.ErrLimit):
		return api.Errorf(api.CodeResourceExhausted, "too many processes, or too many log streams and waits, in this sandbox")
	case errors.Is(err, process.ErrNotRunning):
		return api.Errorf(api.CodeProcessNotRunning, "the process has ended or its stdin is closed")
	case isDiskFull(err):
		return noSpace()
	case errors.As(err, &abort):
		// The caller went away; this answer is for the log's sake.
		s.log.Info("command aborted; its processes were killed", "why", abort.Cause)
		return api.Errorf(api.CodeSandboxUnavailable, "the command was aborted because its caller went away")
	}
	s.log.Error("exec failed", "err", err)
	return api.Errorf(api.CodeInternal, "internal error in the sandbox agent")
}

// writeError answers with e. This is the agent's one place where a code
// becomes an HTTP status.
func writeError(w http.ResponseWriter, e *api.Error) {
	writeJSON(w, e.Code.HTTPStatus(), e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// isDiskFull reports whether err is the sandbox's disk (or its quota)
// being full.
func isDiskFull(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

func noSpace() *api.Error {
	return api.Errorf(api.CodeNoSpace, "no space left on the sandbox's disk")
}
