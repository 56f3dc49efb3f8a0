// Package agent is the in-sandbox agent's edge: it wires the reaper and the
// sessions together, serves the agent's HTTP API on a unix socket, decodes
// and validates every request (they are hostile input), and turns domain
// results and errors into wire types, codes and HTTP statuses. The daemon
// forwards /v1/sandboxes/{id}/<rest> to the agent as /<rest> with the same
// bodies, so the routes and bodies here are the public wire format.
//
// It must stay small and static: it imports no database, image or HTTP
// framework package, and it never logs command text, environment values,
// stdin or output.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/interp"
	"github.com/sandboxd/sandboxd/internal/agent/pidguard"
	"github.com/sandboxd/sandboxd/internal/agent/process"
	"github.com/sandboxd/sandboxd/internal/agent/pty"
	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/session"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"github.com/sandboxd/sandboxd/internal/agent/user"
	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/requestid"
)

// Defaults of the agent's configuration.
const (
	DefaultSocket    = "/.sandboxd/run/agent.sock"
	DefaultRunDir    = "/run/sandboxd-agent"
	DefaultWorkspace = "/workspace"
	// DefaultTranspiler is where the daemon mounts the TypeScript helper
	// (runtime.TranspilePath).
	DefaultTranspiler = "/.sandboxd/transpile"
	// DefaultKeepalive is the longest an event stream stays silent.
	DefaultKeepalive = 15 * time.Second
)

// PrivateEnvPrefix marks variables meant for the agent itself; they are
// not passed on to user code.
const PrivateEnvPrefix = "SANDBOXD_AGENT_"

// baseEnv is what every shell starts with, unless the sandbox's own
// environment says otherwise. TERM is dumb because sessions have no
// terminal.
var baseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
	"TERM=dumb",
}

// Config is the agent's configuration.
type Config struct {
	// RunDir is the agent's private directory (FIFOs, scripts); it should
	// be on a tmpfs. Default DefaultRunDir.
	RunDir string
	// Workspace is the default working directory, created if missing.
	// Default DefaultWorkspace.
	Workspace string
	// CgroupRoot holds the user cgroup directories the spawn wrapper
	// joins. Default spawn.DefaultCgroupRoot.
	CgroupRoot string
	// Shell overrides the session shell (default /bin/bash, else /bin/sh).
	Shell string
	// Self is the agent binary, re-executed as the spawn wrapper. Default
	// /proc/self/exe.
	Self string
	// Transpiler is the code interpreter's TypeScript helper
	// (sandbox-transpile), started on the first cell that needs it; empty:
	// TypeScript cells fail (interp.Config.Transpiler).
	Transpiler string
	// Env is the sandbox's environment, as the agent received it; private
	// variables are dropped. Nil means os.Environ().
	Env []string
	// Version is reported by /health.
	Version string
	// DefaultUser is the user the default session runs as: the image's
	// USER, by name or by numeric ID (empty: root).
	DefaultUser string
	// Keepalive is the interval of SSE keepalive comments on a silent
	// stream. Default DefaultKeepalive.
	Keepalive time.Duration
	// Reaper is the process's reaper. Nil: New makes one and Run runs it.
	// (Tests that start several agents in one process share one: there
	// may be only one waiter on a process's children.)
	Reaper *reaper.Reaper
	// Sessions tunes the session manager (limits, grace periods); its
	// paths, shell, environment, reaper and logger are filled from the
	// fields above.
	Sessions session.Config
	// Processes tunes the process manager (limits, log sizes); its paths,
	// reaper and logger are filled from the fields above.
	Processes process.Config
	// StateDir keeps session definitions, the sandbox environment and
	// process records and logs across agent restarts. Default
	// DefaultStateDir.
	StateDir string
	// Users is the sandbox's account database, for sessions and processes
	// with a user. Default: /etc and /home.
	Users *user.DB
	// Code tunes the code interpreter (interpreters, grace periods); its
	// paths, environment, reaper, logger and limits are filled in.
	Code interp.Config
	// GVisor: the sandbox runs on gVisor. Its Sentry runs the whole
	// sandbox in one host cgroup (there is no user cgroup to join) and has
	// no OOM killer of its own (the host's sees only the Sentry), so the
	// agent's oom_score_adj protects nothing and user programs have
	// nothing to undo: session shells start directly, without the spawn
	// wrapper, whose re-exec of this binary (a Go runtime's start-up, then
	// a second execve) costs as much as the shell's own start there.
	GVisor bool
	// Socket is the path the agent bound its socket at itself (gVisor),
	// where it can bind it again after letting go of it for a checkpoint
	// (suspend.go); empty when the daemon handed the socket over.
	Socket string
	// Log is the operator log. Default: discard.
	Log *slog.Logger
}

// Agent is one running agent.
type Agent struct {
	cfg       Config
	reaper    *reaper.Reaper
	ownReaper bool
	sessions  *session.Manager
	processes *process.Manager
	state     *stateStore
	code      *interp.Manager
	server    *server
	// bootShell: the default shell starts without the spawn wrapper at
	// start-up (session.WarmAtBoot): the agent is the sandbox's init, so
	// no user program can run yet, and user programs join a user cgroup.
	bootShell bool
	// shutdownReason is what the daemon said when it asked the agent to
	// stop (POST /internal/shutdown); the records of killed processes give it.
	shutdownReason atomic.Pointer[string]
}

// New prepares an agent: the reaper (when it must make one), the
// workspace, the run directory and the session manager. Nothing is served
// and no shell runs until Run.
func New(cfg Config) (*Agent, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.RunDir == "" {
		cfg.RunDir = DefaultRunDir
	}
	if cfg.Workspace == "" {
		cfg.Workspace = DefaultWorkspace
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = spawn.DefaultCgroupRoot
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.Users == nil {
		cfg.Users = &user.DB{}
	}
	if err := os.MkdirAll(cfg.Workspace, 0o755); err != nil {
		return nil, fmt.Errorf("creating workspace: %w", err)
	}
	defUser, err := defaultUser(cfg.Users, cfg.DefaultUser)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, reaper: cfg.Reaper}
	if a.reaper == nil {
		r, err := reaper.New(cfg.Log)
		if err != nil {
			return nil, err
		}
		a.reaper, a.ownReaper = r, true
	}
	if os.Getpid() == 1 && !cfg.GVisor {
		protectFromOOM(cfg.Log)
		a.bootShell = true
	}
	sc := cfg.Sessions
	sc.RunDir, sc.Workspace, sc.CgroupRoot = cfg.RunDir, cfg.Workspace, cfg.CgroupRoot
	sc.Shell, sc.Self = cfg.Shell, cfg.Self
	sc.BaseEnv = shellEnv(cfg.Env)
	sc.Reaper, sc.Log, sc.Users = a.reaper, cfg.Log, cfg.Users
	sc.DefaultUser = defUser
	sc.DirectSpawn = cfg.GVisor
	m, err := session.NewManager(sc)
	if err != nil {
		return nil, err
	}
	a.sessions = m
	if err := a.newProcesses(); err != nil {
		m.Close()
		return nil, err
	}
	if a.code, err = newCodeManager(&cfg, sc.BaseEnv, a.reaper); err != nil {
		m.Close()
		return nil, err
	}
	terms, err := pty.NewManager(pty.Config{Reaper: a.reaper, Self: cfg.Self, CgroupRoot: cfg.CgroupRoot, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	fsvc, err := newFileService(cfg, sc)
	if err != nil {
		a.processes.Close()
		m.Close()
		return nil, err
	}
	a.server = &server{
		log:          cfg.Log,
		version:      cfg.Version,
		sessions:     m,
		processes:    a.processes,
		state:        a.state,
		users:        cfg.Users,
		code:         a.code,
		terminals:    terms,
		termBaseEnv:  sc.BaseEnv,
		workspace:    cfg.Workspace,
		files:        fsvc,
		keepalive:    cfg.Keepalive,
		writeTimeout: 30 * time.Second,
		pids:         pidguard.New(pidguard.DefaultRoot, cfg.Log),
		started:      make(chan struct{}),
	}
	if cfg.GVisor {
		if a.server.namer, err = openNamerLink(cfg.RunDir); err != nil {
			// The namer then says it cannot tell, and the daemon names
			// the sandbox before its first call.
			cfg.Log.Warn("no FIFO for a namer to tell the agent on", "err", err)
		}
	}
	a.server.activity = append(a.server.activity, func(act *api.AgentActivity) {
		act.RunningProcesses += a.processes.Running()
	})
	a.server.activity = append(a.server.activity, a.server.codeActivity)
	return a, nil
}

// Handler is the agent's HTTP API.
func (a *Agent) Handler() http.Handler {
	return requestid.Middleware(a.server.logRequests(a.server.takeName(a.server.routes())))
}

// Run serves ln until ctx is done, then shuts down in this order:
//  1. stop accepting connections (the HTTP server's Shutdown begins);
//  2. kill every background process (its record says why), then every
//     session's shell and process group, so that running commands end
//     (their callers get SESSION_TERMINATED) and no new shell starts;
//     kill every code interpreter likewise (CONTEXT_TERMINATED); hang up
//     every terminal (their clients get the exit); end every file watch
//     (its stream gets an error event);
//  3. wait for the HTTP handlers to finish, at most shutdownTimeout, then
//     close the remaining connections and the file system's root;
//  4. save the state file a last time (before the sessions are closed:
//     they are part of it); stop the reaper (if this agent runs it).
//
// As PID 1 the agent's exit then takes down whatever is left in the
// sandbox.
func (a *Agent) Run(ctx context.Context, ln net.Listener) error {
	const shutdownTimeout = 5 * time.Second
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	a.server.shutdown = func(reason string) {
		a.shutdownReason.Store(&reason)
		stop()
	}
	sl := newSuspendableListener(ln, a.cfg.Socket, func(msg string, args ...any) { a.cfg.Log.Warn(msg, args...) })
	if a.cfg.GVisor {
		sl.wrap = wrapRaw
	}
	ln = sl
	if a.cfg.Socket != "" {
		a.server.suspend = sl.suspend
		sl.watchResume(ctx)
	}
	// launched is closed once the default shell started below runs in
	// the user cgroups: until then only the health check is answered, so
	// no user program runs beside a boot shell that is still outside them
	// (WarmAtBoot), while the daemon, which waits for the health answer
	// before it answers its caller, learns the agent is up before the
	// shell's start rather than after it.
	launched := make(chan struct{})
	// answered is closed once the first call other than the health check
	// has been answered (afterFirstAnswer).
	answered := make(chan struct{})
	srv := &http.Server{
		Handler:           healthFirst(launched, onFirstAnswer(answered, a.Handler())),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(a.cfg.Log.Handler(), slog.LevelDebug),
	}
	reaperCtx, stopReaper := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReaper()
	g, gctx := errgroup.WithContext(ctx)
	saverCtx, stopSaver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSaver()
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		a.state.run(saverCtx, func(err error) { a.cfg.Log.Error("saving agent state", "err", err) })
	}()
	if a.ownReaper {
		g.Go(func() error { return a.reaper.Run(reaperCtx) })
	}
	g.Go(func() error {
		// Start the default shell now so the first command does not wait
		// for it. A failure is not fatal: the first command tries again
		// and reports the error to its caller.
		def, err := a.sessions.Get(session.Default)
		switch {
		case err != nil:
			close(launched)
		case a.bootShell:
			err = def.WarmAtBoot(gctx, func() { close(launched) })
		default:
			close(launched)
			err = def.Warm(gctx)
		}
		if err != nil && gctx.Err() == nil {
			a.cfg.Log.Warn("could not start the default session's shell", "err", err)
		}
		a.startMain(gctx)
		close(a.server.started)
		return nil
	})
	g.Go(func() error {
		select {
		case <-answered:
			a.afterFirstAnswer()
		case <-gctx.Done():
		}
		return nil
	})
	g.Go(func() error {
		a.cfg.Log.Info("agent serving", "socket", ln.Addr().String(), "pid", os.Getpid(), "version", a.cfg.Version)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		a.cfg.Log.Info("agent shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- srv.Shutdown(sctx) }() // 1
		reason := process.ReasonShutdown
		if r := a.shutdownReason.Load(); r != nil {
			reason = *r
		}
		a.processes.CloseWithReason(reason) // 2
		stopSaver()                         // 4, while the sessions are still registered
		<-saved
		a.sessions.Close()             // 2
		a.code.Close()                 // 2
		a.server.terminals.Shutdown()  // 2
		a.server.files.hub.Close()     // 2: watch streams end
		if err := <-shut; err != nil { // 3
			srv.Close()
		}
		a.server.files.fs.Close()
		stopReaper() // 4
		return nil
	})
	return g.Wait()
}

// afterFirstAnswer does the start-up work that no call needed before the
// agent's first answer: its system calls (each a trip through gVisor's
// Sentry, on the sandbox's one CPU) would have come before that answer,
// a cold start's. Each piece is also done by the first call that needs it
// (the file API's private mounts, the process manager's directories), so
// a call that comes before this ran finds it done; this does it while the
// sandbox is idle, so that the calls after the first do not pay for it.
func (a *Agent) afterFirstAnswer() {
	a.server.files.fs.Learn()
	if err := a.processes.PrepareDirs(); err != nil {
		a.cfg.Log.Warn("cannot make the directories of background processes", "err", err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(a.cfg.RunDir, &fs); err == nil && fs.Type != unix.TMPFS_MAGIC {
		a.cfg.Log.Warn("the run directory is not on a tmpfs; every command will write to disk", "dir", a.cfg.RunDir)
	}
}

// onFirstAnswer closes answered once h has answered a call other than the
// health check.
func onFirstAnswer(answered chan<- struct{}, h http.Handler) http.Handler {
	var once sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		if r.Method != http.MethodGet || r.URL.Path != agentapi.PathHealth {
			once.Do(func() { close(answered) })
		}
	})
}

// healthFirst serves the health check at once and holds every other call
// until launched is closed (or its caller goes away).
func healthFirst(launched <-chan struct{}, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != agentapi.PathHealth {
			select {
			case <-launched:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// ListenFD takes over the listening socket the daemon handed to the agent
// as descriptor fd (bound on the host, where the sandbox cannot replace
// it). Call it before starting anything: the descriptor is inherited
// without close-on-exec, and a program that inherited it could accept the
// daemon's connections. The listener keeps a close-on-exec copy.
func ListenFD(fd int) (net.Listener, error) {
	f := os.NewFile(uintptr(fd), "agent-listener")
	if f == nil {
		return nil, fmt.Errorf("descriptor %d is not open", fd)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("descriptor %d is not a listening socket: %w", fd, err)
	}
	if _, ok := ln.(*net.UnixListener); !ok {
		ln.Close()
		return nil, fmt.Errorf("descriptor %d is not a unix socket", fd)
	}
	return ln, nil
}

// Listen opens the agent's unix socket at path, replacing a stale socket
// left by an earlier agent (tests; sandboxes get theirs from ListenFD).
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	// Only the daemon (root, outside) talks to the agent; the directory
	// is 0700 too.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("securing %s: %w", path, err)
	}
	return ln, nil
}

// shellEnv is the base environment of shells: the defaults, overridden by
// the sandbox's environment minus the agent's private variables and the
// variables a shell manages itself.
func shellEnv(env []string) []string {
	out := append([]string(nil), baseEnv...)
	for _, kv := range env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || strings.HasPrefix(name, PrivateEnvPrefix) {
			continue
		}
		switch name {
		case "PWD", "OLDPWD", "SHLVL", "_":
			continue
		}
		out = append(out, kv) // later entries win in session.Manager
	}
	return out
}

// protectFromOOM asks the kernel never to pick the agent when the sandbox
// runs out of memory. It needs CAP_SYS_RESOURCE, which sandboxes may not
// have; the cgroup split protects the agent either way.
func protectFromOOM(log *slog.Logger) {
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
		log.Debug("could not lower the agent's oom_score_adj", "err", err)
	}
}

// defaultUser is the name of the user the default session runs as: the
// image's USER as given, or, for a numeric one, the name of the account
// with that ID (made as "u<ID>" when the image has none), so that the
// sessions, which run as users by name, run as that ID.
func defaultUser(users *user.DB, given string) (string, error) {
	uid, err := strconv.Atoi(given)
	if err != nil || uid == 0 {
		return given, nil
	}
	acct, err := users.EnsureUID(uid)
	if err != nil {
		return "", fmt.Errorf("the image's user %s: %w", given, err)
	}
	return acct.Name, nil
}
