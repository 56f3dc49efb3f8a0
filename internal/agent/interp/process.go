package interp

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/proctree"
	"github.com/sandboxd/sandboxd/internal/agent/reaper"
	"github.com/sandboxd/sandboxd/internal/agent/spawn"
)

// Limits of the pump.
const (
	readChunk = 64 << 10
	// drainReads bounds one drain of an output pipe. The driver flushes
	// its output before it writes a frame, so when a frame is read at most
	// one pipe buffer (64 KiB) of older output is still unread; a drain
	// of several buffers gets all of it, yet a subprocess that writes
	// without pause cannot keep the pump in one drain for ever.
	drainReads = 16
	// maxStartLog is how much stderr of a starting interpreter is kept to
	// explain a failed start.
	maxStartLog = 4 << 10
)

// listener gets what the pump reads from an interpreter. Its methods are
// called with the process's mu held, so one at a time and never after the
// listener was replaced.
type listener interface {
	output(st Stream, p []byte)
	frame(f frame)
}

// process is one running interpreter and its pipes.
//
// Why the pump works as it does: the agent's own cgroup keeps only a
// small reserve of tasks, so nothing here may hold an OS thread per
// interpreter. The pipes are non-blocking and registered with Go's poller;
// three goroutines (stdout, stderr, replies) park on them. Each read and
// the delivery of what it read happen together under mu, and before the
// replies goroutine hands on a frame it reads the output pipes itself
// (plain non-blocking reads of the same descriptors, also under mu): so
// output written before a frame is always delivered before it.
type process struct {
	lang Language // Python or JavaScript
	pid  int
	proc *os.Process // signals go through its pidfd: never to a reused PID

	reqF              *os.File // write end of the request pipe (driver's fd 3)
	outF, errF, replF *os.File // read ends of fds 1, 2 and 4
	out, errOut, repl int      // their descriptors, for drains under mu
	ack               int      // write end of the ack pipe (driver's fd 5), non-blocking
	exitCh            chan struct{}
	exited            atomic.Bool
	status            atomic.Value // reaper.Status, once exited
	broken            atomic.Value // string: why the agent killed it, if it did
	readers           sync.WaitGroup
	dead              chan struct{} // closed once the process exited and its pipes were drained and closed

	// mu is held while a pipe is read and what was read is delivered,
	// and while the listener is changed.
	mu      sync.Mutex
	l       listener
	closing bool // the pipes are being closed: no more reads
	frames  frameReader
	buf     []byte
	outBuf  []byte
}

// startProcess starts an interpreter running argv through the spawn
// wrapper, with env, in dir. It returns once the process runs; the driver
// has not necessarily said ready.
func startProcess(cfg *Config, lang Language, env []string, dir string, argv []string) (_ *process, err error) {
	var reqP, repP, outP, errP, ackP [2]int
	var opened []int
	closeAll := func(fds ...int) {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	for _, p := range []*[2]int{&reqP, &repP, &outP, &errP, &ackP} {
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			closeAll(opened...)
			return nil, fmt.Errorf("creating pipes: %w", err)
		}
		opened = append(opened, p[0], p[1])
	}
	ours := []int{reqP[1], outP[0], errP[0], repP[0], ackP[1]}
	for _, fd := range ours {
		if err := unix.SetNonblock(fd, true); err != nil {
			closeAll(opened...)
			return nil, fmt.Errorf("setting up pipes: %w", err)
		}
	}
	p := &process{
		lang: lang, out: outP[0], errOut: errP[0], repl: repP[0], ack: ackP[1],
		exitCh: make(chan struct{}), dead: make(chan struct{}),
		buf: make([]byte, readChunk), outBuf: make([]byte, readChunk),
	}
	// The child's ends, as files: closing them (below) is the only close,
	// so no finalizer can later close a reused descriptor number.
	files := []*os.File{
		nil,
		os.NewFile(uintptr(outP[1]), "stdout"),
		os.NewFile(uintptr(errP[1]), "stderr"),
		os.NewFile(uintptr(reqP[0]), "requests"),
		os.NewFile(uintptr(repP[1]), "replies"),
		os.NewFile(uintptr(ackP[0]), "acks"),
	}
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		closeAll(ours...)
		return nil, err
	}
	files[0] = devNull
	full := spawn.Argv(cfg.Self, spawn.Options{CgroupRoot: cfg.CgroupRoot}, argv[0], argv[1:]...)
	attr := &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: files,
		// A session of its own: a terminal signal or `kill 0` in user code
		// reaches the interpreter's group, never the agent; and the group
		// is what a kill takes down.
		Sys: &syscall.SysProcAttr{Setsid: true},
	}
	_, err = cfg.Reaper.Start(func() (int, error) {
		pr, err := os.StartProcess(full[0], full, attr)
		if err != nil {
			return 0, err
		}
		p.proc, p.pid = pr, pr.Pid
		return pr.Pid, nil
	}, func(st reaper.Status) {
		p.status.Store(st)
		p.exited.Store(true)
		close(p.exitCh)
	})
	if err != nil {
		closeAll(ours...)
		return nil, fmt.Errorf("starting the %s interpreter: %w", lang, err)
	}
	// Non-blocking descriptors become pollable files.
	p.reqF = os.NewFile(uintptr(reqP[1]), "requests")
	p.outF = os.NewFile(uintptr(outP[0]), "stdout")
	p.errF = os.NewFile(uintptr(errP[0]), "stderr")
	p.replF = os.NewFile(uintptr(repP[0]), "replies")
	p.readers.Add(3)
	go p.readLoop(p.outF, func() readState { return p.readOutput(p.out, Stdout, p.buf) })
	go p.readLoop(p.errF, func() readState { return p.readOutput(p.errOut, Stderr, p.buf) })
	go p.readLoop(p.replF, p.readReplies)
	go p.finish()
	return p, nil
}

// readState says what a read found.
type readState int

const (
	readMore readState = iota // data: read again
	readWait                  // nothing now: wait for the poller
	readStop                  // EOF or an error: stop reading this pipe
)

// readLoop reads f until it is closed or at EOF. Each read runs with mu
// held; between reads the goroutine is parked in the poller.
func (p *process) readLoop(f *os.File, read func() readState) {
	defer p.readers.Done()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	for {
		stop := false
		err := rc.Read(func(uintptr) bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.closing {
				stop = true
				return true
			}
			switch read() {
			case readWait:
				return false
			case readStop:
				stop = true
			}
			return true
		})
		if err != nil || stop {
			return
		}
	}
}

// readOutput reads once from an output pipe and hands the data on. mu is
// held.
func (p *process) readOutput(fd int, st Stream, buf []byte) readState {
	n, err := unix.Read(fd, buf)
	switch {
	case n > 0:
		if p.l != nil {
			p.l.output(st, buf[:n])
		}
		return readMore
	case err == unix.EAGAIN:
		return readWait
	case err == unix.EINTR:
		return readMore
	}
	return readStop // EOF: every writer is gone; or an error to give up on
}

// drainOutput reads what the output pipes hold now and hands it on. mu is
// held.
func (p *process) drainOutput() {
	for _, o := range []struct {
		fd int
		st Stream
	}{{p.out, Stdout}, {p.errOut, Stderr}} {
		for range drainReads {
			if p.readOutput(o.fd, o.st, p.outBuf) != readMore {
				break
			}
		}
	}
}

// readReplies reads once from the reply pipe and hands on each complete
// frame, draining the output pipes before each. mu is held.
func (p *process) readReplies() readState {
	n, err := unix.Read(p.repl, p.buf)
	switch {
	case err == unix.EAGAIN:
		return readWait
	case err == unix.EINTR:
		return readMore
	case n <= 0:
		return readStop
	}
	frames, ferr := p.frames.add(p.buf[:n])
	for _, f := range frames {
		p.drainOutput()
		if p.l != nil {
			p.l.frame(f)
		}
		if f.Type == "result" || f.Type == "error" {
			// The driver waits for this before it goes on, so that
			// nothing it prints after the frame is read before it.
			unix.Write(p.ack, []byte{1})
		}
	}
	if ferr != nil {
		p.fail(fmt.Sprintf("protocol error on the reply pipe: %v", ferr))
		return readStop
	}
	return readMore
}

// finish waits for the interpreter to exit, hands on what its pipes still
// hold, closes them and marks the process dead.
func (p *process) finish() {
	<-p.exitCh
	p.mu.Lock()
	for range drainReads {
		if p.readReplies() != readMore {
			break
		}
	}
	p.drainOutput()
	p.closing = true
	p.mu.Unlock()
	// Closing wakes the parked readers; they see closing and return.
	p.outF.Close()
	p.errF.Close()
	p.replF.Close()
	p.reqF.Close()
	unix.Close(p.ack)
	p.readers.Wait()
	p.proc.Release()
	close(p.dead)
}

// setListener makes l receive what the pump reads; nil drops it. It waits
// for a call to the previous listener to return.
func (p *process) setListener(l listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
}

// fail kills the interpreter because the agent cannot go on talking to
// it; why is kept for the error its context reports.
func (p *process) fail(why string) {
	p.broken.CompareAndSwap(nil, why)
	p.kill()
}

// interrupt sends SIGINT to the interpreter itself.
func (p *process) interrupt() {
	if !p.exited.Load() {
		p.proc.Signal(syscall.SIGINT)
	}
}

// kill SIGKILLs the interpreter and every process below it. It does not
// wait: the reaper collects the interpreter and the pump notices.
func (p *process) kill() {
	if p.pid <= 0 || p.exited.Load() {
		return
	}
	// Descendants first, while they are still below the interpreter.
	for range 8 {
		if n, err := proctree.Kill(p.pid, 0); err != nil || n == 0 {
			break
		}
	}
	// The group is named by the interpreter's PID, which stays reserved
	// while it is unreaped.
	unix.Kill(-p.pid, unix.SIGKILL)
	p.proc.Signal(syscall.SIGKILL)
}

// stop kills the interpreter and waits for the pump to finish, at most
// for d.
func (p *process) stop(d time.Duration) {
	p.kill()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.dead:
	case <-t.C:
	}
}

// send writes a request. The write parks in the poller while the pipe
// is full; it gives up when ctx ends or the interpreter exits.
func (p *process) send(ctx context.Context, r request) error {
	data, err := encodeRequest(r)
	if err != nil {
		return err
	}
	if p.exited.Load() {
		return ErrTerminated
	}
	p.reqF.SetWriteDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { p.reqF.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := p.reqF.Write(data); err != nil {
		if p.exited.Load() || errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) {
			return ErrTerminated
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("writing to the interpreter: %w", err)
	}
	return nil
}

// describeExit says how the interpreter ended, for an error message.
func (p *process) describeExit() string {
	if why, ok := p.broken.Load().(string); ok {
		return "the agent stopped it: " + why
	}
	st, ok := p.status.Load().(reaper.Status)
	if !ok {
		return "it is gone"
	}
	switch {
	case st.WS.Signaled():
		return fmt.Sprintf("it was killed by signal %s", strings.ToUpper(unix.SignalName(st.WS.Signal())))
	case st.WS.Exited():
		return fmt.Sprintf("it exited with status %d", st.WS.ExitStatus())
	}
	return "it is gone"
}

// starter is the listener of a starting interpreter: it keeps the first
// frames and a little stderr to explain a failure.
type starter struct {
	frames chan frame
	log    []byte
}

func (s *starter) output(st Stream, p []byte) {
	if st == Stderr && len(s.log) < maxStartLog {
		s.log = append(s.log, p[:min(len(p), maxStartLog-len(s.log))]...)
	}
}

func (s *starter) frame(f frame) {
	select {
	case s.frames <- f:
	default: // a driver that talks out of turn; the waiter notices
	}
}

// await waits for the next frame while the process runs, at most until
// deadline.
func (p *process) await(ctx context.Context, s *starter, deadline time.Time) (frame, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case f := <-s.frames:
		return f, nil
	case <-p.dead:
		// A frame may have come just before the end.
		select {
		case f := <-s.frames:
			return f, nil
		default:
		}
		return frame{}, ErrTerminated
	case <-t.C:
		return frame{}, context.DeadlineExceeded
	case <-ctx.Done():
		return frame{}, context.Cause(ctx)
	}
}

// startLog returns the stderr kept by s, for an error message.
func (p *process) startLog(s *starter) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(strings.ToValidUTF8(string(s.log), "?")), "\n")
	if len(lines) > 6 {
		lines = lines[len(lines)-6:]
	}
	return strings.Join(lines, "\n")
}
