package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agentapi"
)

// Letting go of the socket for a gVisor checkpoint.
//
// runsc checkpoint refuses to save a sandbox that holds a socket of the
// host ("Cannot save endpoint with bound host socket"), and the agent's
// listening socket on gVisor is one (--host-uds=create), as is every
// connection it accepted. So before a checkpoint the daemon asks the
// agent (POST /internal/suspend) to close its listener, unlink the socket
// and close every connection it holds; the agent answers first. After the
// checkpoint the agent binds the socket again at the same path, woken by
// either of two things:
//
//   - gVisor itself: the agent opens /proc/gvisor/checkpoint when it lets
//     go of its socket, and that descriptor becomes readable once the
//     next checkpoint is over, then says how it ended ("restore" in a
//     sandbox restored from it, "resume" or "error" in one that kept
//     running). So a restored agent wakes by itself as soon as its kernel
//     runs again, without the daemon's `runsc kill` (a runsc process and
//     a call into the sandbox: tens of milliseconds of every resume);
//   - agentapi.ResumeSignal, which the daemon sends through the runtime
//     when the checkpoint is called off, when the agent did not answer
//     soon after a restore (a checkpoint of an older agent), and after a
//     daemon restart.
//
// Nothing else in the sandbox changes: sessions, processes and code
// contexts live on in the checkpoint.
//
// A daemon that dies between the two leaves the agent without a socket;
// the agent binds it again by itself after suspendLimit, so a restarted
// daemon finds it (a checkpoint takes milliseconds to seconds, and the
// sandbox's kernel, timers included, stands still while it is saved).

// suspendLimit is how long the agent stays without its socket when no
// resume comes.
const suspendLimit = 60 * time.Second

// gVisorCheckpointFile is where gVisor reports the end of a checkpoint to
// the processes of its sandbox (above); it does not exist elsewhere.
const gVisorCheckpointFile = "/proc/gvisor/checkpoint"

// errNotRebindable: the agent's socket was handed over by the daemon
// (bound on the host), so the agent could not bind it again.
var errNotRebindable = errors.New("the agent's socket was inherited; it cannot be bound again")

// suspendableListener is the agent's listener, which can close its socket
// and every connection it accepted, and later bind the socket again.
type suspendableListener struct {
	path string // where to bind again; empty: not rebindable
	log  func(msg string, args ...any)
	// openCheckpoint opens gVisorCheckpointFile, non-blocking (tests: a
	// pipe); nil: none.
	openCheckpoint func() (int, error)

	mu        sync.Mutex
	ln        net.Listener
	suspended bool
	resumed   chan struct{} // closed on resume or close, while suspended
	closed    bool
	conns     map[net.Conn]struct{}
	timer     *time.Timer
	// watch waits for the checkpoint's end, while suspended.
	watch *checkpointWatch
	// wrap, when set, wraps each accepted connection (see wrapRaw).
	wrap func(net.Conn) net.Conn
}

func newSuspendableListener(ln net.Listener, path string, log func(string, ...any)) *suspendableListener {
	return &suspendableListener{ln: ln, path: path, log: log, conns: map[net.Conn]struct{}{}, openCheckpoint: openGVisorCheckpoint}
}

func openGVisorCheckpoint() (int, error) {
	fd, err := unix.Open(gVisorCheckpointFile, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: gVisorCheckpointFile, Err: err}
	}
	return fd, nil
}

// Accept waits for the next connection, across suspensions.
func (l *suspendableListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		ln, closed, suspended, resumed := l.ln, l.closed, l.suspended, l.resumed
		l.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if suspended {
			<-resumed
			continue
		}
		c, err := ln.Accept()
		l.mu.Lock()
		if err != nil {
			retry := !l.closed && (l.suspended || l.ln != ln)
			l.mu.Unlock()
			if retry {
				continue
			}
			return nil, err
		}
		if l.suspended || l.closed {
			l.mu.Unlock()
			c.Close()
			continue
		}
		if l.wrap != nil {
			c = l.wrap(c)
		}
		tc := &trackedConn{Conn: c, l: l}
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

// Close closes the listener for good, and waits for the watch of a
// checkpoint to end.
func (l *suspendableListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	if l.suspended {
		close(l.resumed)
		w := l.watch
		l.stopWaking()
		l.mu.Unlock()
		if w != nil {
			<-w.done
		}
		return nil
	}
	defer l.mu.Unlock()
	return l.ln.Close()
}

func (l *suspendableListener) Addr() net.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ln.Addr()
}

// suspend closes the listener (unlinking its socket) and every accepted
// connection.
func (l *suspendableListener) suspend() error {
	if l.path == "" {
		return errNotRebindable
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return net.ErrClosed
	}
	if l.suspended {
		return nil
	}
	l.suspended, l.resumed = true, make(chan struct{})
	// Connections first: the daemon takes the socket's disappearance for
	// the sign that nothing of the host is held any more.
	for c := range l.conns {
		c.(*trackedConn).Conn.Close()
	}
	clear(l.conns)
	err := l.ln.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	l.timer = time.AfterFunc(suspendLimit, func() {
		l.log("no resume came; binding the agent's socket again")
		l.resume()
	})
	l.watchCheckpoint()
	return err
}

// watchCheckpoint opens gVisorCheckpointFile now, before the checkpoint
// it is to report starts, and resumes once it reports the end. l.mu is
// held.
//
// The wait is a poll of the file beside a pipe of the agent's own, not a
// blocking read: gVisor's file cannot join an epoll set, so Go's poller
// cannot take it, and a blocking read outlives a close of the descriptor
// (the runtime closes it only when the read returns). A checkpoint that
// never began (runsc refused it, or the daemon died first) reports
// nothing, so such a read went on after the resume, holding the file and
// a thread, one more for each failed pause, until some later checkpoint
// ended. Closing the pipe's write end (stopWaking) ends this wait at once.
func (l *suspendableListener) watchCheckpoint() {
	if l.openCheckpoint == nil {
		return
	}
	fd, err := l.openCheckpoint()
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			l.log("watching for the end of the checkpoint", "err", err)
		}
		return // woken by the signal
	}
	var stop [2]int
	if err := unix.Pipe2(stop[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		l.log("watching for the end of the checkpoint", "err", err)
		return
	}
	w := &checkpointWatch{stop: stop[1], done: make(chan struct{})}
	l.watch = w
	go func() {
		defer close(w.done)
		ended, err := awaitCheckpoint(fd, stop[0])
		unix.Close(fd)
		unix.Close(stop[0])
		if err != nil {
			// The waking is left to the signal.
			l.log("watching for the end of the checkpoint", "err", err)
		}
		if !ended {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.watch != w {
			return // resumed meanwhile, maybe suspended again
		}
		if err := l.resumeLocked(); err != nil {
			l.log("binding the agent's socket again", "err", err)
		}
	}()
}

// checkpointWatch is one wait for a checkpoint's end (watchCheckpoint).
type checkpointWatch struct {
	stop int           // the write end of the pipe that ends the wait
	done chan struct{} // closed once the wait's goroutine has returned
}

// awaitCheckpoint waits until fd (gVisorCheckpointFile, non-blocking) says
// how the checkpoint ended ("restore\n", "resume\n" or "error\n": each
// means the sandbox runs again) and reports true, or until stop becomes
// readable or hung up, and reports false.
func awaitCheckpoint(fd, stop int) (ended bool, err error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(stop), Events: unix.POLLIN}}
	var b [16]byte
	for {
		if _, err := unix.Poll(fds, -1); err == unix.EINTR {
			continue
		} else if err != nil {
			return false, fmt.Errorf("polling %s: %w", gVisorCheckpointFile, err)
		}
		if fds[1].Revents != 0 {
			return false, nil
		}
		if fds[0].Revents == 0 {
			continue
		}
		n, err := unix.Read(fd, b[:])
		switch {
		case n > 0:
			return true, nil
		case err == unix.EAGAIN || err == unix.EINTR:
		case err != nil:
			return false, fmt.Errorf("reading %s: %w", gVisorCheckpointFile, err)
		default:
			return false, fmt.Errorf("reading %s: end of file", gVisorCheckpointFile)
		}
	}
}

// resume binds the socket again. Resuming a listener that is not
// suspended does nothing.
func (l *suspendableListener) resume() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resumeLocked()
}

func (l *suspendableListener) resumeLocked() error {
	if !l.suspended || l.closed {
		return nil
	}
	ln, err := Listen(l.path)
	if err != nil {
		return err
	}
	l.ln, l.suspended = ln, false
	close(l.resumed)
	l.stopWaking()
	return nil
}

// stopWaking stops what would resume l: the timer and the watch of the
// checkpoint, whose goroutine then closes its descriptors and ends. l.mu
// is held.
func (l *suspendableListener) stopWaking() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	if l.watch != nil {
		unix.Close(l.watch.stop)
		l.watch = nil
	}
}

// trackedConn leaves its listener's set when closed.
type trackedConn struct {
	net.Conn
	l    *suspendableListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// watchResume binds the socket again on every agentapi.ResumeSignal until ctx ends.
func (l *suspendableListener) watchResume(ctx context.Context) {
	if l.path == "" {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, agentapi.ResumeSignal)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				if err := l.resume(); err != nil {
					l.log("binding the agent's socket again", "err", err)
				}
			}
		}
	}()
}

// suspendRequest answers, then lets go of the socket and every connection
// (this one included): see the top of this file. Internal (agentapi).
func (s *server) suspendRequest(w http.ResponseWriter, r *http.Request) {
	if s.suspend == nil {
		writeError(w, api.Errorf(api.CodeUnsupportedByRuntime, "this agent cannot let go of its socket"))
		return
	}
	// An empty answer of known length, on its way before the connection
	// is closed (a chunked body would lose its end).
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	if err := http.NewResponseController(w).Flush(); err != nil {
		s.log.Warn("sending the suspend answer", "err", err)
	}
	if err := s.suspend(); err != nil {
		s.log.Error("letting go of the agent's socket", "err", err)
	}
}
