// Command sandbox-agent is the agent inside every sandbox: PID 1 of the
// sandbox's container, it reaps orphans, runs the session shells and serves
// the agent API to the daemon on a unix socket. It is statically linked
// (CGO_ENABLED=0) so it runs in any image, and bind-mounted read-only.
//
// `sandbox-agent spawn -- PROG ARGS...` is the wrapper the agent re-executes
// to start user programs in the sandbox's user cgroup (package spawn).
//
// The runtime does not name its memory mappings (decoratemappings=0, the
// Go 1.24 behaviour): naming is one prctl(PR_SET_VMA) after every mmap,
// 23 more system calls before the agent serves, each a trip through
// gVisor's Sentry on a gVisor sandbox's cold start. Only /proc/PID/maps
// showed the names. A //go:debug line, not GODEBUG in the environment,
// which the agent's children would inherit.
//
//go:debug decoratemappings=0
package main

import (
	"context"
	"flag"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent"
	"github.com/sandboxd/sandboxd/internal/agent/agentlog"
	"github.com/sandboxd/sandboxd/internal/agent/bindmount"
	"github.com/sandboxd/sandboxd/internal/agent/rename"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"github.com/sandboxd/sandboxd/internal/requestid"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

type config struct {
	socket     string
	listenFD   int
	runDir     string
	workspace  string
	cgroupRoot string
	stateDir   string
	logLevel   slog.Level
	user       string
	spawn      string
	transpile  string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == spawn.Arg {
		spawn.Main(os.Args[2:]) // never returns
	}
	if len(os.Args) > 1 && os.Args[1] == rename.Arg {
		rename.Main(os.Args[2:]) // never returns
	}
	if len(os.Args) > 1 && os.Args[1] == bindmount.Arg {
		bindmount.Main(os.Args[2:]) // never returns
	}
	// Whatever the daemon and the runtime inherited (nohup's ignored
	// SIGHUP, a supervisor's blocked signals), the programs the agent
	// starts, the session shells it starts without the spawn wrapper
	// included, inherit nothing of it.
	if err := spawn.StartWithDefaultSignals(); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-agent: %v (going on; its programs may inherit blocked signals)\n", err)
	}
	var cfg config
	flag.StringVar(&cfg.socket, "socket", agent.DefaultSocket, "unix socket to serve the agent API on, unless --listen-fd is given")
	flag.IntVar(&cfg.listenFD, "listen-fd", -1, "inherited descriptor of a listening unix socket to serve the agent API on (the daemon's)")
	flag.StringVar(&cfg.runDir, "run-dir", agent.DefaultRunDir, "private directory for FIFOs and scripts (on a tmpfs)")
	flag.StringVar(&cfg.workspace, "workspace", agent.DefaultWorkspace, "default working directory of sessions")
	flag.StringVar(&cfg.cgroupRoot, "cgroup-root", spawn.DefaultCgroupRoot, "directory of the user cgroups that user programs join")
	flag.StringVar(&cfg.stateDir, "state-dir", agent.DefaultStateDir, "directory on the sandbox's disk for sessions, environment and process logs that survive a restart")
	flag.TextVar(&cfg.logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	flag.StringVar(&cfg.user, "user", "", "user the default session runs as (the image's USER); empty: root")
	flag.StringVar(&cfg.spawn, "spawn", "", "the spawn wrapper's own binary (sandbox-spawn), which starts user programs faster than the agent re-executing itself")
	flag.StringVar(&cfg.transpile, "transpile", agent.DefaultTranspiler, "the code interpreter's TypeScript helper (sandbox-transpile), started on the first TypeScript cell")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(agentVersion())
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sandbox-agent: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	// Before anything else can start a program that would inherit it.
	ln, err := listen(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-agent: %v\n", err)
		os.Exit(1)
	}
	// stderr is a file on the host (see agentlog): kept bounded while the
	// agent runs, for the standard logger too (libraries). Lines logged
	// with a request's context carry the daemon's request ID.
	logw := agentlog.New(os.Stderr, agentlog.DefaultMax)
	stdlog.SetOutput(logw)
	log := slog.New(requestid.Handler(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: cfg.logLevel, ReplaceAttr: utcTime})))

	// User code runs as root in the same namespaces as the agent, with the
	// same capabilities, so the kernel would let it ptrace the agent (and
	// stop or steer it, and every session with it). A non-dumpable process
	// can only be traced with CAP_SYS_PTRACE, which sandboxes do not have.
	// Programs the agent starts are dumpable again after their execve.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("could not make the agent non-dumpable", "err", err)
	}

	// Signals the daemon never sends do nothing (straySignals); SIGTERM
	// (and SIGINT, outside a sandbox) stops the agent in order.
	signal.Notify(make(chan os.Signal, 1), straySignals(os.Getpid() == 1)...)
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals(os.Getpid() == 1)...)
	defer stop()
	if err := run(ctx, cfg, ln, log); err != nil {
		log.Error("agent failed", "err", err)
		os.Exit(1)
	}
}

// straySignals are the signals that would end the agent although the
// daemon never sends them: Go's default for a signal it was not asked to
// notify is to exit (HUP, INT) or to exit with a stack dump (QUIT, ABRT,
// and ILL, TRAP, BUS, FPE, SEGV, STKFLT, SYS when kill(2) sends them).
// In a sandbox the agent is PID 1 and only root in the sandbox can send it
// these (the kernel drops a signal to a namespace's init that has no
// handler, but Go handles every signal), ending every session and process
// for nothing; notified to a channel nobody reads, they do nothing. A
// real fault is not a sent signal: it still crashes the agent. PIPE: a
// write to a closed stderr is an EPIPE error instead. SIGTERM stops the
// agent (the daemon stops a sandbox with it), SIGUSR2 rebinds its socket
// after a gVisor restore (agentapi.ResumeSignal), SIGKILL ends it; every
// other signal was already caught and ignored by Go. signal.Ignore is not
// used: an ignored signal stays ignored in every program the agent starts.
func straySignals(pid1 bool) []os.Signal {
	sigs := []os.Signal{unix.SIGPIPE, unix.SIGHUP, unix.SIGQUIT, unix.SIGABRT, unix.SIGILL, unix.SIGTRAP,
		unix.SIGBUS, unix.SIGFPE, unix.SIGSEGV, unix.SIGSTKFLT, unix.SIGSYS}
	if pid1 {
		sigs = append(sigs, unix.SIGINT)
	}
	return sigs
}

// utcTime writes each log line's time in UTC, as the daemon's own log on
// a host in UTC: a time in the sandbox's local zone loaded its
// /etc/localtime at the first line, four system calls more (trips through
// gVisor's Sentry) on the way of a cold start's first answer.
func utcTime(groups []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey && len(groups) == 0 && a.Value.Kind() == slog.KindTime {
		a.Value = slog.TimeValue(a.Value.Time().UTC())
	}
	return a
}

// stopSignals stop the agent in order: SIGTERM, and SIGINT (Ctrl-C) when
// it was started by hand rather than as a sandbox's init.
func stopSignals(pid1 bool) []os.Signal {
	if pid1 {
		return []os.Signal{unix.SIGTERM}
	}
	return []os.Signal{unix.SIGTERM, unix.SIGINT}
}

func listen(cfg config) (net.Listener, error) {
	if cfg.listenFD >= 0 {
		return agent.ListenFD(cfg.listenFD)
	}
	return agent.Listen(cfg.socket)
}

// onGVisor reports whether the agent runs in a gVisor sandbox: the daemon
// hands every other sandbox's agent a listening descriptor, and asks a
// gVisor one (--host-uds=create) to bind its socket itself at the default
// path. Told by the command line the daemon already gives, not by a new
// flag: a paused gVisor sandbox is restored only with the command line it
// was checkpointed with.
func onGVisor(cfg config) bool {
	return cfg.listenFD < 0 && cfg.socket == agent.DefaultSocket
}

func run(ctx context.Context, cfg config, ln net.Listener, log *slog.Logger) error {
	socket := cfg.socket
	if cfg.listenFD >= 0 {
		socket = "" // the daemon's, bound on the host: never bound again here
	}
	a, err := agent.New(agent.Config{
		Self:        spawnBinary(cfg.spawn, log),
		Transpiler:  cfg.transpile,
		Socket:      socket,
		RunDir:      cfg.runDir,
		Workspace:   cfg.workspace,
		CgroupRoot:  cfg.cgroupRoot,
		StateDir:    cfg.stateDir,
		DefaultUser: cfg.user,
		GVisor:      onGVisor(cfg),
		Version:     agentVersion(),
		Log:         log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	return a.Run(ctx, ln)
}

// spawnBinary opens the spawn wrapper's binary the daemon mounted at path
// and returns how children execute it: through the agent's descriptor
// (/proc/self/fd/N; a child resolves it in its own table, which still
// holds the descriptor when it calls execve), so that user code, which
// may rename the directory holding the mount and put a program of its own
// at path, can never make the agent start that program as root outside
// the user cgroup. "" (the agent re-executes itself) when there is none.
func spawnBinary(path string, log *slog.Logger) string {
	if path == "" {
		return ""
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("not a regular file")
		}
	}
	if err != nil {
		log.Warn("the spawn wrapper's binary is unusable; the agent starts programs through itself", "path", path, "err", err)
		if f != nil {
			f.Close()
		}
		return ""
	}
	defer f.Close()
	// A high number, open for the agent's life: a child's execve runs
	// after its own descriptors were moved to 0, 1, 2..., which must not
	// replace this one.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, spawnFD)
	if err != nil {
		log.Warn("the spawn wrapper's binary is unusable; the agent starts programs through itself", "path", path, "err", err)
		return ""
	}
	return fmt.Sprintf("/proc/self/fd/%d", fd)
}

// spawnFD is the lowest descriptor spawnBinary keeps the wrapper's binary
// at: above any child's list of descriptors.
const spawnFD = 100

func agentVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
