package interp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
	"github.com/sandboxd/sandboxd/internal/agent/transpile"
)

// transpileTimeout bounds one cell's transpiling, the helper's start
// included (a Go program's start: tens of ms, hundreds in gVisor on a
// loaded host).
const transpileTimeout = 30 * time.Second

// errNoTranspiler: the agent was given no helper (Config.Transpiler).
var errNoTranspiler = errors.New("the TypeScript helper (sandbox-transpile) is missing from this sandbox")

// transpiler is the agent's end of the TypeScript helper (package
// transpile): one helper process for all contexts, started through the
// spawn wrapper on the first cell that needs it, so that it runs in the
// user cgroup (its memory and threads are user code's, never the agent's
// small reserve), and started again on the next cell if it died. Cells
// are transpiled one at a time.
type transpiler struct {
	cfg *Config

	// mu is held for a whole request; it guards the fields below.
	mu     sync.Mutex
	h      *helperProc
	closed bool
}

// helperProc is one running helper.
type helperProc struct {
	proc   *os.Process
	in     *os.File // its stdin
	out    *os.File // its stdout
	exited chan struct{}
}

// transpile returns the JavaScript to run for code, or the syntax error
// to report, for TypeScript and for JavaScript with import or export
// statements; other JavaScript is returned as it is, without the helper.
// An error means the helper could not answer.
func (t *transpiler) transpile(ctx context.Context, lang Language, code string) (string, *ExecError, error) {
	if lang == JavaScript && !transpile.HasModuleSyntax(code) {
		return code, nil, nil
	}
	req := transpile.Request{Language: transpile.TypeScript, Code: code}
	if lang == JavaScript {
		req.Language = transpile.JavaScript
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return "", nil, ErrClosed
	}
	if t.cfg.Transpiler == "" {
		return "", nil, errNoTranspiler
	}
	if t.h != nil && t.h.gone() {
		t.h.stop() // killed or crashed since the last cell
		t.h = nil
	}
	if t.h == nil {
		h, err := startHelper(t.cfg)
		if err != nil {
			return "", nil, err
		}
		t.h = h
	}
	reply, err := t.h.ask(ctx, req)
	if err != nil {
		// Out of step, or gone: the next cell starts another.
		t.h.stop()
		t.h = nil
		return "", nil, err
	}
	if e := reply.Error; e != nil {
		return "", &ExecError{Name: e.Name, Value: e.Value, Traceback: e.Traceback}, nil
	}
	return reply.Code, nil, nil
}

// close stops the helper, if one runs.
func (t *transpiler) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.h != nil {
		t.h.stop()
		t.h = nil
	}
}

// helperID is the user and group the helper runs as: nobody's. It parses
// hostile code, so it gets no privilege (root user code gains nothing
// from it either: it runs no more than what root user code could run).
const helperID = 65534

// startHelper starts `sandbox-transpile serve` through the spawn wrapper,
// as nobody, in a session of its own (a `kill 0` of user code never
// reaches the agent through it), with an empty environment: it reads
// nothing of the sandbox's.
func startHelper(cfg *Config) (_ *helperProc, err error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer inR.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		inW.Close()
		return nil, err
	}
	defer outW.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	defer devNull.Close()
	// os.Pipe's ends are pollable: the agent's ends keep read and write
	// deadlines, so a wedged helper holds a run no longer than its
	// deadline (the child's ends are made blocking when it starts).
	h := &helperProc{in: inW, exited: make(chan struct{})}
	nobody := helperID
	argv := spawn.Argv(cfg.Self, spawn.Options{CgroupRoot: cfg.CgroupRoot, UID: &nobody, GID: &nobody}, cfg.Transpiler, transpile.Arg)
	attr := &os.ProcAttr{Dir: "/", Env: []string{}, Files: []*os.File{inR, outW, devNull},
		Sys: &syscall.SysProcAttr{Setsid: true}}
	_, err = cfg.Reaper.Start(func() (int, error) {
		p, err := os.StartProcess(argv[0], argv, attr)
		if err != nil {
			return 0, err
		}
		h.proc = p
		return p.Pid, nil
	}, func(reaper.Status) { close(h.exited) })
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("starting the TypeScript helper: %w", err)
	}
	h.out = outR
	return h, nil
}

// ask sends one request and reads its reply.
func (h *helperProc) ask(ctx context.Context, req transpile.Request) (transpile.Reply, error) {
	deadline := time.Now().Add(transpileTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	h.in.SetWriteDeadline(deadline)
	h.out.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() {
		h.in.SetWriteDeadline(time.Now())
		h.out.SetReadDeadline(time.Now())
	})
	defer stop()
	var reply transpile.Reply
	if err := transpile.WriteFrame(h.in, req); err != nil {
		return reply, fmt.Errorf("the TypeScript helper: %w", err)
	}
	if err := transpile.ReadFrame(h.out, &reply); err != nil {
		return reply, fmt.Errorf("the TypeScript helper: %w", err)
	}
	return reply, nil
}

// gone reports whether the helper has exited.
func (h *helperProc) gone() bool {
	select {
	case <-h.exited:
		return true
	default:
		return false
	}
}

// stop kills the helper and waits (briefly) for the reaper to collect it.
func (h *helperProc) stop() {
	h.in.Close()
	h.out.Close()
	if h.proc != nil {
		h.proc.Kill()
		select {
		case <-h.exited:
		case <-time.After(3 * time.Second):
		}
	}
}
