package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/proctree"
)

// errNotDispatched: the command line could not be handed to the shell, so
// the command certainly did not run.
var errNotDispatched = errors.New("the shell is not reading commands")

const (
	// killInterval is how often, while a killed command winds down, its
	// process tree is searched again for survivors and new forks.
	killInterval = 20 * time.Millisecond
	// reapTimeout bounds the wait for the reaper after the shell was
	// SIGKILLed; only a wedged kernel or reaper exceeds it.
	reapTimeout = 5 * time.Second
	// maxGraceFactor bounds the wall time, in KillGraces, a stopped
	// command's shell gets to report (see graceSpent).
	maxGraceFactor = 6
)

// run runs one command in s.sh. Called with the turn held and a live
// shell.
func (s *Session) run(ctx context.Context, cmd Command, out Output, sh *shell) (res Result, err error) {
	s.seq++
	n := s.seq
	r := &runner{
		s: s, sh: sh, n: n, out: out,
		fds: [3]int{-1, -1, -1},
	}
	defer r.cleanup()

	for _, st := range []Stream{Stdout, Stderr} {
		if err := s.openOutput(st); err != nil {
			return res, err
		}
		r.fds[st] = s.outs[st].r
	}
	cmdPath := s.dir + "/" + cmdFile
	persist, newEnv, newVersion := s.pendingEnv(sh)
	text := cmd.Text
	// envInText: persist are the first lines of the text in the frame.
	envInText := false
	if len(persist) > 0 && len(cmd.Env) == 0 && cmd.Cwd == "" && cmd.Stdin == nil && sh.bash {
		if t, ok := envChangesInFrame(persist, cmd.Text); ok {
			text, persist, envInText = t, nil, true
		}
	}
	wrapped := len(cmd.Env) > 0 || cmd.Cwd != "" || len(persist) > 0
	r.inFrame = sh.bash && !wrapped && cmd.Stdin == nil && inFrame(text)
	if r.inFrame {
		if err := s.null.prepare(s); err != nil {
			return res, err
		}
	} else if err := s.cmdFile.write(s, cmd.Text); err != nil {
		return res, err
	}
	if wrapped {
		script, err := wrapperScript(cmdPath, cmd.Env, cmd.Cwd, persist)
		if err != nil {
			return res, err
		}
		if err := r.writeFile(s.dir+"/"+wrapperFile, script); err != nil {
			return res, err
		}
	}
	// Stdin is a regular file, not a FIFO: it needs no writer to stay
	// around, cannot deadlock an open that happens after the agent gave up
	// on the command, and the command sees EOF after the last byte.
	if cmd.Stdin != nil {
		if err := r.writeFile(s.dir+"/"+stdinFile, cmd.Stdin); err != nil {
			return res, err
		}
	}

	s.wake.reset()
	stop := context.AfterFunc(ctx, s.wake.wake)
	defer stop()

	// Anything this command starts is younger than r.start; see
	// runner.since.
	r.start = time.Now()
	if cmd.Timeout > 0 {
		r.deadline = r.start.Add(cmd.Timeout)
	}
	r.nextCheck = r.start.Add(statusCheckInterval)
	if !r.inFrame {
		text = ""
	}
	if err := sh.send(frame(n, variant(wrapped, cmd.Stdin != nil, r.inFrame), sh.bash, text)); err != nil {
		return res, fmt.Errorf("%w: %w", errNotDispatched, err)
	}
	if newEnv != nil && !envInText {
		// The wrapper sets it first thing.
		sh.env, sh.envVersion = newEnv, newVersion
	}
	r.loop(ctx, cmd.Timeout)
	if newEnv != nil && envInText && r.done && r.abort == nil {
		// The command ran to its end, so its first lines did. One stopped
		// may have been skipped from its start (see unwindInit): the next
		// command makes the changes again.
		sh.env, sh.envVersion = newEnv, newVersion
	}
	res = Result{ExitCode: r.code, Duration: time.Since(r.start)}
	s.after.pending, s.after.inFrame = true, r.inFrame
	if r.done && r.abort == nil {
		// The usual end: the check of the output FIFOs waits until the
		// caller has its answer (see settle).
		r.passRest()
		r.handOver()
		return res, nil
	}
	r.drainOutputs()

	res.Duration = time.Since(r.start)
	switch {
	case r.abort != nil:
		r.finishKill()
		// The shell is lost if it never reported, or if it was killed
		// (even if its status line slipped out just before).
		lost := !r.done || !r.shellKilled.IsZero()
		if lost {
			if !sh.exited.Load() && !r.shellKilled.IsZero() {
				// Only possible if the reaper is wedged.
				s.m.cfg.Log.Error("killed shell was not reaped in time", "session", s.id, "pid", sh.pid)
			}
			s.m.cfg.Log.Info("session shell killed with its command; the next command gets a fresh shell", "session", s.id, "why", r.abort)
			s.dropShell()
		}
		if !r.done {
			res.ExitCode = 128 + int(unix.SIGKILL)
		}
		if r.timedOut {
			return res, &TimeoutError{Timeout: cmd.Timeout, ShellRestarted: lost}
		}
		return res, r.abort
	case r.done:
		return res, nil // the status line and the shell's exit came together
	case sh.unread() > 0 || r.neverBegun():
		// The shell died before it read this command (it was killed
		// between commands and the reaper had not told yet), or before it
		// sourced it.
		return res, errNotDispatched
	default: // the shell exited
		res.ExitCode = int(sh.code.Load())
		s.dropShell()
		return res, ErrTerminated
	}
}

// mkfifo makes a FIFO at path, replacing what is there: the last
// command's FIFO if its cleanup could not remove it, or a file user code
// put there.
func mkfifo(path string) error {
	err := unix.Mkfifo(path, 0o600)
	if err == unix.EEXIST {
		if err = unix.Unlink(path); err == nil {
			err = unix.Mkfifo(path, 0o600)
		}
	}
	return err
}

// runner is the state of one command while it runs.
type runner struct {
	s   *Session
	sh  *shell
	n   uint64
	out Output

	// inFrame: the command's text went in its frame (variant 'e'), not
	// to the command file.
	inFrame bool

	fds [3]int // the output FIFOs' read ends (s.outs), indexed by Stream; -1 once let go
	// full: the last read of a FIFO filled the buffer, so more may be
	// waiting in it (see passRest).
	full [3]bool
	made []string // files to remove afterwards

	start    time.Time // when the command was handed to the shell
	deadline time.Time
	// nextCheck is when the status FIFO is checked next (see
	// statusCheckInterval).
	nextCheck time.Time

	done bool // the status line for n arrived
	code int

	abort    error // why the command is being killed, if it is
	timedOut bool
	abortAt  time.Time
	// abortCPU is the shell's processor time at abortAt, in clock ticks
	// (see graceSpent); abortCPUKnown is false where it could not be read.
	abortCPU      uint64
	abortCPUKnown bool
	lastKill      time.Time
	shellKilled   time.Time
}

// neverBegun reports whether the shell certainly did not begin the
// command: it never sourced the command file, or never opened DIR/n.
func (r *runner) neverBegun() bool {
	if r.inFrame {
		return r.s.null.neverFollowed(r.s)
	}
	return r.s.cmdFile.neverRead()
}

// since is what proctree.KillCommand takes to leave out what earlier
// commands started: the start time of the command, asked for only when
// its processes are killed (see proctree.At).
func (r *runner) since() uint64 { return proctree.At(r.start) }

// writeFile writes a per-command file with three system calls (open,
// write, close): os.WriteFile would also register the descriptor with the
// Go runtime's poller and set and reset its flags, five calls more, and on
// gVisor every system call costs tens of microseconds (more on a loaded
// host) on the path of every command.
func (r *runner) writeFile(path string, data []byte) error {
	if err := writeSmallFile(path, data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	r.made = append(r.made, path)
	return r.s.own(path)
}

// writeSmallFile creates or truncates path (never following a link: the
// directory is the agent's) and writes data to it.
func writeSmallFile(path string, data []byte) error {
	fd, err := rawOpen(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		n, err := rawWrite(fd, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			rawClose(fd)
			return err
		}
		data = data[n:]
	}
	return rawClose(fd)
}

// loop waits for the command to finish: its status line, or the shell's
// exit. Output is passed on as it arrives. On timeout or abort it kills
// the command's processes, and if the shell still does not report within
// KillGrace, the shell too.
func (r *runner) loop(ctx context.Context, timeout time.Duration) {
	s, sh := r.s, r.sh
	events := make([]unix.EpollEvent, 8)
	for {
		if r.done {
			return
		}
		if sh.exited.Load() {
			// A status line written just before the exit still counts.
			r.readStatus()
			return
		}
		if r.abort == nil {
			now := time.Now()
			if err := ctx.Err(); err != nil {
				r.startAbort(&AbortError{Cause: context.Cause(ctx)}, false)
			} else if !r.deadline.IsZero() && !now.Before(r.deadline) {
				r.startAbort(&TimeoutError{Timeout: timeout}, true)
			} else if !now.Before(r.nextCheck) {
				r.checkStatus(now)
			}
		}
		if r.abort != nil {
			r.kill()
			if !r.shellKilled.IsZero() && time.Since(r.shellKilled) > reapTimeout {
				return
			}
		}

		var until time.Time
		switch {
		case r.abort != nil:
			until = time.Now().Add(killInterval)
		case !r.deadline.IsZero() && r.deadline.Before(r.nextCheck):
			until = r.deadline
		default:
			until = r.nextCheck
		}
		nev, err := r.next(events, until)
		if err != nil && err != unix.EINTR {
			s.m.cfg.Log.Error("epoll wait failed; killing the session's shell", "session", s.id, "err", err)
			r.startAbort(fmt.Errorf("waiting for the command: %w", err), false)
			continue
		}
		for _, ev := range events[:max(nev, 0)] {
			switch fd := int(ev.Fd); fd {
			case r.fds[Stdout]:
				r.readOutput(Stdout)
			case r.fds[Stderr]:
				r.readOutput(Stderr)
			case sh.status:
				r.readStatus()
			case s.wake.fd:
				s.wake.reset()
			}
		}
	}
}

// next waits for the session's events until until (zero: no limit): for
// the command's first briefWait in system calls of its own, then in the
// runtime's poller (see Session.waitBriefly).
func (r *runner) next(events []unix.EpollEvent, until time.Time) (int, error) {
	brief := r.start.Add(briefWait)
	if r.abort != nil || !time.Now().Before(brief) {
		return r.s.wait(events, until)
	}
	if until.IsZero() || brief.Before(until) {
		until = brief
	}
	return r.s.waitBriefly(events, until)
}

func (r *runner) startAbort(why error, timedOut bool) {
	r.abort, r.timedOut, r.abortAt = why, timedOut, time.Now()
	if p, err := proctree.Stat(r.sh.pid); err == nil {
		r.abortCPU, r.abortCPUKnown = p.CPU, true
	}
}

// kill takes one step of killing the command. The first step tells the
// shell to unwind (see unwindInit), so that it runs nothing more of the
// command once its processes are dead; a shell that cannot be told is
// killed at once. Then every killInterval the processes the command
// started are killed (again: they may have forked since); once the grace
// is spent (see graceSpent) without a status line the shell is frozen, its
// new children killed, and the shell killed.
func (r *runner) kill() {
	now := time.Now()
	if now.Sub(r.lastKill) < killInterval || !r.shellKilled.IsZero() {
		return
	}
	first := r.lastKill.IsZero()
	r.lastKill = now
	if first && !r.unwind() {
		r.killShell(now)
		return
	}
	if !r.graceSpent(now) {
		proctree.KillCommand(r.sh.pid, r.since())
		return
	}
	r.killShell(now)
}

// graceSpent reports whether the shell has had its chance to report the
// stopped command: KillGrace of processor time since the abort, not of
// wall time. Unwinding takes the shell a few milliseconds of its own, but
// on a loaded host (and in gVisor, where each of its system calls is a trip
// through the Sentry) it may wait longer than KillGrace for a CPU; killing
// it then would lose the session's state for the host's load, not for
// anything the command did. Time the shell waits for a CPU, is stopped or
// sleeps does not count, so a shell that neither unwinds nor works (its own
// trap on the signal, waiting for the children the agent keeps killing) is
// bounded by maxGraceFactor x KillGrace of wall time: the command's line
// never goes on longer than that past its timeout. A busy shell (a builtin
// loop that ignores the signal) uses processor time and is killed after
// KillGrace of it.
func (r *runner) graceSpent(now time.Time) bool {
	grace := r.s.m.cfg.KillGrace
	waited := now.Sub(r.abortAt)
	switch {
	case waited < grace:
		return false // it cannot have run for longer than it waited
	case waited >= maxGraceFactor*grace || !r.abortCPUKnown:
		return true
	}
	p, err := proctree.Stat(r.sh.pid)
	if err != nil {
		return true // gone; the loop sees its exit
	}
	ran := time.Duration(p.CPU-r.abortCPU) * time.Second / proctree.TicksPerSecond
	return ran >= grace
}

// unwind asks the shell to stop the command once its current child is
// dead. It must come before the kill: a shell whose child dies first would
// go on with the command's next line. It reports false when the shell
// cannot unwind: not bash, or the command reset or ignored the trap (then
// the signal would kill the shell or do nothing).
func (r *runner) unwind() bool {
	if !r.sh.bash || !catches(r.sh.pid, unwindSignal) {
		return false
	}
	marker := r.s.dir + "/" + unwindFile
	if err := r.writeFile(marker, unwindMarker(r.n)); err != nil {
		r.s.m.cfg.Log.Error("cannot mark the command as stopping; killing the shell", "session", r.s.id, "err", err)
		return false
	}
	r.sh.signal(syscall.Signal(unwindSignal))
	return true
}

// catches reports whether process pid has a handler for sig, from the
// SigCgt mask in /proc/PID/status. Where the kernel does not say (gVisor's
// status file has no SigCgt) it assumes so: if the trap was reset the
// signal kills the shell, which also stops the command.
func catches(pid int, sig int) bool {
	mask, ok := signalMask(pid, "SigCgt")
	return !ok || mask&(1<<(sig-1)) != 0
}

// signalMask reads one of the signal masks of /proc/PID/status (SigCgt,
// ShdPnd, ...); ok is false where the kernel does not give it.
func signalMask(pid int, name string) (mask uint64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(line, name+":"); found {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return mask, err == nil
		}
	}
	return 0, false
}

// killShell: the shell has not reported, or cannot unwind. It is busy
// itself (a loop of builtins whose trap was reset) or keeps starting
// processes. Stop it so it cannot start more, kill what it started, then
// kill it. Its children must die first: once the shell is gone they are
// re-parented and no longer found below it.
func (r *runner) killShell(now time.Time) {
	r.sh.signal(syscall.SIGSTOP)
	for range 50 {
		if n, _ := proctree.KillCommand(r.sh.pid, r.since()); n == 0 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.sh.signal(syscall.SIGKILL)
	r.shellKilled = now
}

// finishKill makes sure an aborted command's processes are gone before
// its caller hears so: SIGKILL is delivered asynchronously, and a busy
// machine may not have run a victim's exit yet when the shell reports. It
// kills what is left (again) until nothing is, for at most a second.
func (r *runner) finishKill() {
	if !r.shellKilled.IsZero() {
		return // the shell and everything below it were killed
	}
	for range 500 {
		if n, err := proctree.KillCommand(r.sh.pid, r.since()); err != nil || n == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// readOutput reads what one FIFO holds, one read (level-triggered epoll
// calls again if more is there). While the command runs the agent holds a
// write end of its own (outFIFO.hold), so the FIFO cannot reach end of
// file; if it does anyway (an error), it is let go of like a FIFO a
// background child keeps.
func (r *runner) readOutput(st Stream) {
	fd := r.fds[st]
	if fd < 0 {
		return
	}
	for {
		n, err := rawRead(fd, r.s.buf)
		r.full[st] = n == len(r.s.buf)
		switch {
		case n > 0:
			r.pass(st, r.s.buf[:n])
			return
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return
		default:
			r.s.outs[st].letGo(r.s, st, false)
			r.fds[st] = -1
			return
		}
	}
}

// pass hands a chunk of output to the caller.
func (r *runner) pass(st Stream, data []byte) {
	if st == Stderr {
		data = dropJobReports(data, r.s.dir)
	}
	if len(data) > 0 {
		if werr := r.out.Write(st, data); werr != nil && r.abort == nil {
			r.startAbort(&AbortError{Cause: werr}, false)
		}
	}
}

// drainOutput passes on what FIFO st holds once the command has ended,
// with the agent's own write end closed, and reports whether anything
// else still writes to it (a background child of the command): it reads
// what the FIFO held when the drain began, plus one more read that tells
// end of file from live writers (a child that writes without pause must
// not keep the drain going for ever). A read that comes back short
// emptied the FIFO, so the size is asked for only after a full one.
func (r *runner) drainOutput(st Stream) (writers bool) {
	fd := r.fds[st]
	budget := -1 // bytes left of what the FIFO held; -1: not known yet
	for {
		n, err := rawRead(fd, r.s.buf)
		switch {
		case n > 0:
			r.pass(st, r.s.buf[:n])
			switch {
			case budget >= 0:
				if budget -= n; budget < 0 {
					return true
				}
			case n < len(r.s.buf):
				budget = 0
			default:
				budget, _ = unix.IoctlGetInt(fd, unix.TIOCINQ) // = FIONREAD
			}
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return true
		default: // end of file: no writer is left; or an error
			return err != nil
		}
	}
}

// readStatus reads the status pipe and looks for the line of command n.
func (r *runner) readStatus() {
	sh := r.sh
	if sh.eof {
		return
	}
	var b [128]byte
	for {
		n, err := rawRead(sh.status, b[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return
		}
		if n <= 0 {
			// EOF: the shell exited (or exec'd another program), and so
			// did everything else holding the pipe. The reaper will say.
			sh.eof = true
			unix.EpollCtl(r.s.ep, unix.EPOLL_CTL_DEL, sh.status, nil)
			return
		}
		sh.line = append(sh.line, b[:n]...)
		for {
			i := indexNL(sh.line)
			if i < 0 {
				break
			}
			line := string(sh.line[:i])
			sh.line = sh.line[i+1:]
			r.statusLine(line)
		}
		if len(sh.line) > maxStatusLine {
			r.protocolError("status line too long")
			return
		}
		if r.done {
			// What else the FIFO holds is read with the next command
			// (level-triggered): one read less on every command's way.
			return
		}
	}
}

// statusLine handles one line of the status FIFO: "STATUS N" (see
// dispatchVariants).
func (r *runner) statusLine(line string) {
	codeText, seqText, ok := cut(line, ' ')
	seq, err1 := strconv.ParseUint(seqText, 10, 64)
	code, err2 := strconv.Atoi(codeText)
	switch {
	case !ok || err1 != nil || err2 != nil:
		r.protocolError("malformed status line")
	case seq == r.n:
		r.done, r.code = true, code
	case seq > r.n:
		r.protocolError("status line from the future")
	}
	// seq < r.n: a line forged or delayed from an earlier command; it says
	// nothing about this one.
}

// protocolError: something other than the agent's own lines reached the
// status pipe. The shell cannot be trusted to report this command, so it
// is killed; the command ends as ErrTerminated.
func (r *runner) protocolError(why string) {
	r.s.m.cfg.Log.Warn("session status pipe protocol error; killing the shell", "session", r.s.id, "why", why)
	r.sh.line = r.sh.line[:0]
	r.sh.killGroup()
}

// drainOutputs passes on what the FIFOs still hold. Whatever was written
// before the status line is in them now. A FIFO that nothing but the shell
// wrote to serves the next command; one that still has writers (a
// background child) is handed to the drainer rather than closed, so that
// the child does not die of SIGPIPE on its next write, and the next
// command gets a fresh one.
func (r *runner) drainOutputs() {
	for _, st := range []Stream{Stdout, Stderr} {
		if r.fds[st] < 0 {
			continue
		}
		o := &r.s.outs[st]
		o.closeHold()
		if r.drainOutput(st) {
			o.letGo(r.s, st, true)
		} else if err := o.openHold(r.s, st); err != nil {
			r.s.m.cfg.Log.Warn("cannot keep the output FIFO; the next command gets a fresh one", "session", r.s.id, "err", err)
			o.letGo(r.s, st, false)
		}
		r.fds[st] = -1
	}
}

// passRest passes on what the command wrote before its status line and
// the loop has not read yet. A FIFO holding unread data is in every epoll
// batch (level-triggered), so it was in the status line's too, whose
// events were all handled: the loop read it then, and only a read that
// filled the buffer may have left more behind. The agent's own write
// ends stay open: whether anything else still writes to the FIFOs is
// settled after the answer (see settle).
func (r *runner) passRest() {
	for _, st := range []Stream{Stdout, Stderr} {
		if r.fds[st] >= 0 && r.full[st] {
			r.drainOutput(st) // ends at EAGAIN: the agent's write end is open
		}
	}
}

// handOver leaves the check of the output FIFOs still in use to the
// session's settling, which runs once the caller has its answer.
func (r *runner) handOver() {
	for _, st := range []Stream{Stdout, Stderr} {
		r.s.after.check[st] = r.fds[st] >= 0
	}
}

// cleanup removes the command's text and its files (the text, per-call
// environment and stdin may be secret) before the caller has its answer.
func (r *runner) cleanup() {
	r.s.cmdFile.clear(r.s)
	for _, p := range r.made {
		rawUnlink(p)
	}
}

// settle does what the last command left for after its caller had the
// answer: on gVisor every system call is a trip through the Sentry, and
// these were six on the way of every command's answer. Called with the
// turn held, before the next command.
//
// For each output FIFO the command used, the agent closes its own write
// end and asks the session's epoll set, once for both FIFOs, what they
// report: a hang-up alone means nothing but the shell wrote to the FIFO,
// and it serves the next command (the agent's write end is opened again);
// nothing at all means a background child of the command still holds it
// (`server &`): it goes to the drainer and the next command gets a fresh
// one. A FIFO with data in it is read to its end of file instead (see
// writersLeft), which tells the two apart the same way. What is read here
// was written after the command's status line, by such a child, and
// belongs to no command. One poll for both FIFOs is one system call where
// a read of each was two. Then the command file is checked (see
// commandFile).
func (s *Session) settle() {
	a := &s.after
	if a.check[Stdout] || a.check[Stderr] {
		for _, st := range []Stream{Stdout, Stderr} {
			if a.check[st] {
				s.outs[st].closeHold()
			}
		}
		ready, polled := s.outputEvents()
		for _, st := range []Stream{Stdout, Stderr} {
			if a.check[st] {
				s.checkWriters(st, ready[st], polled)
			}
		}
	}
	if a.inFrame {
		// The command file is checked before its next text instead.
		s.null.check(s)
		s.cmdFile.unchecked = true
	} else {
		s.cmdFile.check(s)
	}
	*a = afterCommand{}
}

// afterCommand is what settle has to do.
type afterCommand struct {
	pending bool    // a command ran
	inFrame bool    // its text came in its frame: DIR/n was its stdin
	check   [3]bool // output FIFOs, by Stream, to check for writers
}

// outputEvents polls the session's epoll set once, without waiting, and
// returns what each output FIFO reports, by Stream; polled is false if
// the poll failed. A FIFO reports a hang-up once a writer had opened it
// and none is left (the agent's own write end was opened after its read
// end), on Linux and in gVisor alike.
func (s *Session) outputEvents() (ready [3]uint32, polled bool) {
	var events [8]unix.EpollEvent // the set holds four descriptors: both FIFOs, the status FIFO, the waker
	n, err := rawEpollPoll(s.ep, events[:])
	if err != nil {
		return ready, false
	}
	for _, ev := range events[:n] {
		for _, st := range []Stream{Stdout, Stderr} {
			if r := s.outs[st].r; r >= 0 && int(ev.Fd) == r {
				ready[st] = ev.Events
			}
		}
	}
	return ready, true
}

// checkWriters is settle's check of output FIFO st, whose agent's write
// end is closed, given what the poll of outputEvents reported for it.
func (s *Session) checkWriters(st Stream, ready uint32, polled bool) {
	o := &s.outs[st]
	if o.r < 0 {
		return
	}
	var left bool
	switch {
	case polled && ready == unix.EPOLLHUP:
		left = false // no writer, nothing written
	case polled && ready == 0:
		left = true // a writer, nothing written
	default:
		left = s.writersLeft(o.r)
	}
	if left {
		o.letGo(s, st, true)
		return
	}
	if err := o.openHold(s, st); err != nil {
		s.m.cfg.Log.Warn("cannot keep the output FIFO; the next command gets a fresh one", "session", s.id, "err", err)
		o.letGo(s, st, false)
	}
}

// writersLeft reads FIFO fd, whose agent's write end is closed, to its
// end of file and reports whether it did not get there: something still
// writes to it (EAGAIN, or data without end), or the read failed. What it
// reads is dropped. Bounded: a writer that never stops is not waited out.
func (s *Session) writersLeft(fd int) bool {
	for range 16 {
		n, err := rawRead(fd, s.buf)
		switch {
		case n > 0, err == unix.EINTR:
		case n == 0 && err == nil:
			return false
		default:
			return true
		}
	}
	return true
}

// commandFile is the session's DIR/cmd, which the shell sources: made
// once and kept open, each command's text written at its start and
// blanked at its end, before the answer (the text may be secret).
// Making, writing, closing and removing a file per command were four
// system calls on every command's way, each a trip through gVisor's
// Sentry; these are two. The settling makes a new one when the file was
// removed or replaced (by user code: its directory is the session
// user's), so that the shell never sources a file the agent does not
// write.
//
// A text is blanked by writing zeros over it, not by truncating the file
// to nothing: on gVisor's tmpfs a truncation to 0 gives the file's page
// back to the host (an fallocate of the Sentry's) and the next text's
// write takes and faults in a fresh one, which cost a pwrite and
// ftruncate pair about twice as much as a pwrite and a second pwrite
// inside a sandbox (bench/results/gvisor.txt). The file keeps the length
// of the last text, zeros between commands; a shorter next text is cut
// to its length with ftruncate, which keeps the page. The shell never
// sources the zeros: a frame always follows a new text.
//
// The file's access time also tells whether a shell that died during a
// command had begun it: the settling sets it to 0, and a read (the
// shell's `.`) sets it to the time of the read. A shell killed while it
// waits for a frame may still take one that arrives before it dies
// (shell.unread is then 0): it never read the file, and the command may
// run in a fresh shell. Only on a filesystem seen to keep access times
// (atime): on one that does not (noatime) the time stays 0, and such a
// command is reported as ended with its shell, as it was before the
// frame came in one read.
type commandFile struct {
	fd int // -1: none made
	// size is the file's length as the agent wrote it: the last text's.
	size int64
	// atime: this file's access time was seen to change on a read;
	// armed: it was 0 when the last command's text was written.
	atime, reset, armed bool
	// dirty: the file holds a text that clear has not blanked yet.
	dirty bool
	// unchecked: user code ran since the last check (a command of
	// variant 'e' does not use the file, and is not followed by one).
	unchecked bool
}

// write writes a command's text, making the file first if there is none.
func (f *commandFile) write(s *Session, text string) error {
	if f.unchecked {
		f.check(s)
	}
	if f.fd < 0 {
		if err := f.create(s); err != nil {
			return err
		}
	}
	f.armed, f.reset = f.atime && f.reset, false
	data := []byte(text)
	for off := int64(0); len(data) > 0; {
		n, err := rawPwrite(f.fd, data, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("writing %s/%s: %w", s.dir, cmdFile, err)
		}
		data, off = data[n:], off+int64(n)
	}
	if n := int64(len(text)); n < f.size {
		if err := rawFtruncate(f.fd, n); err != nil {
			return fmt.Errorf("cutting %s/%s to its text: %w", s.dir, cmdFile, err)
		}
	}
	f.size, f.dirty = int64(len(text)), true
	return nil
}

// create makes the file, empty and the session user's; never through a
// link, and always a new one.
func (f *commandFile) create(s *Session) error {
	path := s.dir + "/" + cmdFile
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd, err := rawOpen(path, flags, 0o600)
	if err == unix.EEXIST { // put there by user code, or left by an agent before this one
		rawUnlink(path)
		fd, err = rawOpen(path, flags, 0o600)
	}
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if s.acct != nil {
		if err := unix.Fchown(fd, s.acct.UID, s.acct.GID); err != nil {
			rawClose(fd)
			rawUnlink(path)
			return fmt.Errorf("giving %s to the session user: %w", path, err)
		}
	}
	f.fd, f.size = fd, 0
	f.reset = rawResetAtime(fd) == nil
	return nil
}

// maxBlanked is the longest text clear overwrites with zeros; a longer
// one is truncated away (one page: what the truncation would give back).
const maxBlanked = 4096

var blank [maxBlanked]byte

// clear blanks the last text: zeros over it (see commandFile), or for a
// long one a truncation to nothing. If that fails, the file is let go of
// and removed.
func (f *commandFile) clear(s *Session) {
	if f.fd < 0 || f.size == 0 || !f.dirty {
		return
	}
	f.dirty = false
	if f.size <= maxBlanked {
		if n, err := rawPwrite(f.fd, blank[:f.size], 0); err == nil && int64(n) == f.size {
			return
		}
	}
	if rawFtruncate(f.fd, 0) != nil {
		f.remove(s)
		return
	}
	f.size = 0
}

// check is the settling's: it lets go of the file if it is no longer at
// its path (its last link was removed, or another file renamed over it),
// so that the next command makes a new one; otherwise it truncates it
// to nothing if it is not as long as the agent left it (user code wrote
// to it), notes whether the last command's read set the access time,
// and sets it to 0 again.
func (f *commandFile) check(s *Session) {
	f.unchecked = false
	if f.fd < 0 {
		return
	}
	st, err := rawFstat(f.fd)
	if err != nil || st.Nlink == 0 {
		rawClose(f.fd)
		f.fd = -1
		return
	}
	if st.Size != f.size {
		// Written by someone else (user code may write to the file): the
		// shell must not source what follows the next text.
		if rawFtruncate(f.fd, 0) != nil {
			f.remove(s)
			return
		}
		f.size = 0
	}
	f.reset = true
	if st.Atim.Nano() != 0 {
		f.atime = true
		f.reset = rawResetAtime(f.fd) == nil
	}
}

// neverRead reports whether the shell certainly did not read the file
// since the last command's text was written to it.
func (f *commandFile) neverRead() bool {
	if f.fd < 0 || !f.armed {
		return false
	}
	st, err := rawFstat(f.fd)
	return err == nil && st.Atim.Nano() == 0
}

func (f *commandFile) remove(s *Session) {
	rawClose(f.fd)
	rawUnlink(s.dir + "/" + cmdFile)
	f.fd = -1
}

// close releases the file when the session ends.
func (f *commandFile) close() {
	if f.fd >= 0 {
		rawClose(f.fd)
		f.fd = -1
	}
}

// stdinLink is the session's DIR/n, a symbolic link to /dev/null: the
// stdin of a command whose text came in its frame (variant 'e'), which
// the shell opens first thing. Following the link sets the link's access
// time, as the shell's `.` sets the command file's (see commandFile):
// the settling sets it to 0, so that a shell that died during such a
// command can be told to have never begun it (it took the frame and was
// killed before it ran anything), and the command run in a fresh shell.
// Only once a follow was seen to set it; otherwise such a command is
// reported ended with its shell. The link is root's in the session
// user's directory: the settling makes a new one if it was replaced.
type stdinLink struct {
	ino uint64 // the link's inode; 0: none made
	// As commandFile's: the access time was seen to change; it was reset
	// to 0 after the last command; both held when this command was sent.
	atime, reset, armed bool
}

// prepare makes the link if there is none, before a command is sent.
func (l *stdinLink) prepare(s *Session) error {
	if l.ino == 0 {
		if err := l.create(s); err != nil {
			return err
		}
	}
	l.armed, l.reset = l.atime && l.reset, false
	return nil
}

// create makes the link, replacing whatever user code put at its path.
func (l *stdinLink) create(s *Session) error {
	path := s.dir + "/" + nullLink
	err := unix.Symlink("/dev/null", path)
	if err == unix.EEXIST {
		rawUnlink(path)
		err = unix.Symlink("/dev/null", path)
	}
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	st, err := rawLstat(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	l.ino = st.Ino
	l.reset = rawResetLinkAtime(path) == nil
	return nil
}

// check is the settling's after a command of variant 'e': it lets go of
// the link if it is no longer the agent's, so that the next one makes a
// new one; otherwise it notes whether the command's open set the access
// time, and sets it to 0 again.
func (l *stdinLink) check(s *Session) {
	if l.ino == 0 {
		return
	}
	path := s.dir + "/" + nullLink
	st, err := rawLstat(path)
	if err != nil || st.Ino != l.ino || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		l.ino = 0
		return
	}
	l.reset = true
	if st.Atim.Nano() != 0 {
		l.atime = true
		l.reset = rawResetLinkAtime(path) == nil
	}
}

// neverFollowed reports whether the shell certainly did not open the link
// since the last command was sent.
func (l *stdinLink) neverFollowed(s *Session) bool {
	if l.ino == 0 || !l.armed {
		return false
	}
	st, err := rawLstat(s.dir + "/" + nullLink)
	return err == nil && st.Ino == l.ino && st.Atim.Nano() == 0
}

// outFIFO is one of a session's output FIFOs (DIR/o, DIR/e), kept from
// one command to the next while nothing but the shell writes to it:
// making, opening, watching and removing two FIFOs per command, and the
// wake-ups when the shell closed them, were a third of the agent's system
// calls per command, each a trip through gVisor's Sentry. The agent
// holds the read end (r, non-blocking, in the session's epoll set) and,
// except while it drains, a write end of its own (hold): the shell's
// closing the FIFO at a command's end is then no end of file, which would
// wake the agent's wait before the status line, and a FIFO without
// writers reports a hang-up to epoll for as long as it has none. The
// drain closes hold and reads to the end of file, which comes only if no
// background child of the command kept the FIFO (see drainOutputs).
type outFIFO struct {
	r, hold int // -1: not open
}

// fifoPath is the path of output FIFO st.
func (s *Session) fifoPath(st Stream) string {
	if st == Stderr {
		return s.dir + "/" + stderrFIFO
	}
	return s.dir + "/" + stdoutFIFO
}

// openOutput makes sure output FIFO st exists with both of the agent's
// ends open. A new one replaces whatever is at its path: user code may
// have put a file there.
func (s *Session) openOutput(st Stream) error {
	o := &s.outs[st]
	if o.r >= 0 {
		return nil
	}
	path := s.fifoPath(st)
	if err := mkfifo(path); err != nil {
		return fmt.Errorf("creating %s FIFO: %w", st, err)
	}
	if err := s.own(path); err != nil {
		unix.Unlink(path)
		return err
	}
	// The read end first, non-blocking: opening it never blocks, and once
	// it is open neither does any opening of the write end.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Unlink(path)
		return fmt.Errorf("opening %s FIFO: %w", st, err)
	}
	if err := epollAdd(s.ep, fd, unix.EPOLLIN); err != nil {
		unix.Close(fd)
		unix.Unlink(path)
		return err
	}
	o.r = fd
	if err := o.openHold(s, st); err != nil {
		o.letGo(s, st, false)
		return fmt.Errorf("opening %s FIFO: %w", st, err)
	}
	return nil
}

// openHold opens the agent's own write end. Through the path: user code
// that replaced the FIFO there gets a fresh one at the next command.
func (o *outFIFO) openHold(s *Session, st Stream) error {
	fd, err := rawOpen(s.fifoPath(st), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	o.hold = fd
	return nil
}

func (o *outFIFO) closeHold() {
	if o.hold >= 0 {
		rawClose(o.hold)
		o.hold = -1
	}
}

// letGo stops using the FIFO: its read end goes to the drainer when
// something still writes to it (linger), and is closed otherwise; its
// path is removed, so that a later open by path cannot reach it.
func (o *outFIFO) letGo(s *Session, st Stream, linger bool) {
	o.closeHold()
	if o.r < 0 {
		return
	}
	// EPOLL_CTL_DEL before the close, although the close alone usually
	// takes the FIFO out of the epoll set: a child the agent forks at that
	// moment holds a copy of the descriptor until its exec, and the stale
	// entry could then report events under the number the next FIFO gets.
	unix.EpollCtl(s.ep, unix.EPOLL_CTL_DEL, o.r, nil)
	if linger {
		s.m.linger.adopt(o.r)
	} else {
		unix.Close(o.r)
	}
	o.r = -1
	unix.Unlink(s.fifoPath(st))
}

// close releases the FIFO when the session ends.
func (o *outFIFO) close(ep int) {
	o.closeHold()
	if o.r >= 0 {
		unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, o.r, nil)
		unix.Close(o.r)
		o.r = -1
	}
}

func indexNL(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// dropJobReports removes from stderr the lines in which the session's shell
// reports a process killed by SIGKILL or SIGTERM, such as
// "/run/sandboxd-agent/default/cmd: line 1:    18 Killed    sleep 60": an
// internal path and a job-control report the caller did not ask for (the
// result already says the command timed out or was aborted; a background
// job killed with it is reported during the next command). Only such
// reports on the agent's own scripts are dropped: "command not found", a
// syntax error or a segmentation fault stay. A shell writes a report in one
// write, so it never straddles two reads.
func dropJobReports(data []byte, dir string) []byte {
	var out []byte
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line = data[:i+1]
		}
		data = data[len(line):]
		if !isJobReport(line, dir) {
			out = append(out, line...)
		}
	}
	return out
}

// isJobReport matches "<dir>/<cmd|w>: line N: <spaces>PID Killed|Terminated ...",
// or "bash: line N: ..." from a command eval'd from its frame.
func isJobReport(line []byte, dir string) bool {
	rest, ok := bytes.CutPrefix(line, []byte(dir+"/"))
	if !ok {
		// A command eval'd from its frame: bash names itself.
		rest, ok = bytes.CutPrefix(line, []byte("bash: line "))
	} else if rest, ok = bytes.CutPrefix(rest, []byte(cmdFile+": line ")); !ok {
		rest, ok = bytes.CutPrefix(rest, []byte(wrapperFile+": line "))
	}
	if !ok {
		return false
	}
	_, rest, ok = bytes.Cut(rest, []byte(": "))
	if !ok {
		return false
	}
	rest = bytes.TrimLeft(rest, " ")
	digits := len(rest) - len(bytes.TrimLeft(rest, "0123456789"))
	if digits == 0 {
		return false
	}
	rest = bytes.TrimLeft(rest[digits:], " ")
	return bytes.HasPrefix(rest, []byte("Killed")) || bytes.HasPrefix(rest, []byte("Terminated"))
}
