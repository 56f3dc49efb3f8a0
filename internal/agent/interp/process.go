package interp

import (
	"context"
	"encoding/binary"
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
// called on the pump's goroutine, one at a time, with the process's mu
// held.
type listener interface {
	output(st Stream, p []byte)
	frame(f frame)
}

// process is one running interpreter and its pipes.
type process struct {
	lang Language // Python or JavaScript
	pid  int
	proc *os.Process // signals go through its pidfd: never to a reused PID

	req               int // write end of the request pipe (driver's fd 3), non-blocking
	ack               int // write end of the ack pipe (driver's fd 5), non-blocking
	out, errOut, repl int // read ends of fds 1, 2 and 4, non-blocking
	wake              int // eventfd written when the process exits

	exited atomic.Bool
	status atomic.Value // reaper.Status, once exited
	broken atomic.Value // string: why the agent killed it, if it did

	dead chan struct{} // closed by the pump once the process exited and its pipes were drained

	// mu is held while a listener is called and while it is changed, so
	// a listener that was replaced is never called again.
	mu sync.Mutex
	l  listener
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
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		closeAll(opened...)
		return nil, fmt.Errorf("creating eventfd: %w", err)
	}
	p := &process{
		lang: lang, req: reqP[1], ack: ackP[1], out: outP[0], errOut: errP[0], repl: repP[0], wake: wake,
		dead: make(chan struct{}),
	}
	ours := []int{p.req, p.ack, p.out, p.errOut, p.repl, p.wake}
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
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(p.wake, one[:])
	})
	if err != nil {
		closeAll(ours...)
		return nil, fmt.Errorf("starting the %s interpreter: %w", lang, err)
	}
	for _, fd := range []int{p.req, p.ack, p.out, p.errOut, p.repl} {
		if err := unix.SetNonblock(fd, true); err != nil {
			p.kill()
			go p.pump() // still needed to notice the exit and close the fds
			return nil, err
		}
	}
	go p.pump()
	return p, nil
}

// setListener makes l receive what the pump reads; nil drops it. It waits
// for a call to the previous listener to return.
func (p *process) setListener(l listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
}

// pump reads the interpreter's output and replies until it exits. It
// owns the read ends and the eventfd and closes them when it returns.
func (p *process) pump() {
	defer func() {
		unix.Close(p.out)
		unix.Close(p.errOut)
		unix.Close(p.repl)
		unix.Close(p.req)
		unix.Close(p.ack)
		unix.Close(p.wake)
		if p.proc != nil {
			p.proc.Release()
		}
		close(p.dead)
	}()
	fds := []unix.PollFd{
		{Fd: int32(p.out), Events: unix.POLLIN},
		{Fd: int32(p.errOut), Events: unix.POLLIN},
		{Fd: int32(p.repl), Events: unix.POLLIN},
		{Fd: int32(p.wake), Events: unix.POLLIN},
	}
	outBuf := make([]byte, readChunk)
	replyBuf := make([]byte, readChunk)
	var frames frameReader
	for {
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			p.fail(fmt.Sprintf("polling its pipes: %v", err))
		}
		exited := p.exited.Load() // before the reads: all it wrote is in the pipes
		p.drainOutput(fds, outBuf)
		p.readReplies(fds, replyBuf, outBuf, &frames)
		if exited {
			return
		}
		if fds[3].Revents != 0 {
			var b [8]byte
			unix.Read(p.wake, b[:])
		}
	}
}

// drainOutput reads what is in the stdout and stderr pipes and hands it
// on. A pipe at EOF is taken out of the poll set.
func (p *process) drainOutput(fds []unix.PollFd, buf []byte) {
	for i, st := range []Stream{Stdout, Stderr} {
		for range drainReads {
			if fds[i].Fd < 0 {
				break
			}
			n, err := unix.Read(int(fds[i].Fd), buf)
			if err == unix.EINTR {
				continue
			}
			if n == 0 && err == nil {
				fds[i].Fd = -1 // EOF: every writer is gone
				break
			}
			if n <= 0 {
				break // EAGAIN, or an error to give up on
			}
			p.deliver(func(l listener) { l.output(st, buf[:n]) })
			if n < len(buf) {
				break
			}
		}
	}
}

// readReplies reads the reply pipe and hands on each complete frame,
// draining the output pipes before each.
func (p *process) readReplies(fds []unix.PollFd, buf, outBuf []byte, fr *frameReader) {
	for fds[2].Fd >= 0 {
		n, err := unix.Read(int(fds[2].Fd), buf)
		if err == unix.EINTR {
			continue
		}
		if n == 0 && err == nil {
			fds[2].Fd = -1
			return
		}
		if n <= 0 {
			return
		}
		frames, ferr := fr.add(buf[:n])
		for _, f := range frames {
			p.drainOutput(fds, outBuf)
			p.deliver(func(l listener) { l.frame(f) })
			if f.Type == "result" || f.Type == "error" {
				// The driver waits for this before it goes on, so that
				// nothing it prints after the frame is read before it.
				unix.Write(p.ack, []byte{1})
			}
		}
		if ferr != nil {
			p.fail(fmt.Sprintf("protocol error on the reply pipe: %v", ferr))
			fds[2].Fd = -1
			return
		}
	}
}

// deliver calls f with the current listener, if any.
func (p *process) deliver(f func(listener)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		f(p.l)
	}
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

// send writes a request. The pipe is non-blocking: a driver that does not
// read (it is busy, or gone) cannot hold the caller beyond ctx.
func (p *process) send(ctx context.Context, r request) error {
	data, err := encodeRequest(r)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		select {
		case <-p.dead:
			return ErrTerminated
		default:
		}
		n, err := unix.Write(p.req, data)
		if n > 0 {
			data = data[n:]
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			fds := []unix.PollFd{{Fd: int32(p.req), Events: unix.POLLOUT}}
			unix.Poll(fds, 100)
			continue
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
