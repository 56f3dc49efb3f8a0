package pty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// Terminal is one shell on a pseudo-terminal.
type Terminal struct {
	m         *Manager
	id        string
	session   string
	shell     string
	master    *os.File
	proc      *os.Process
	pid       int
	idle      time.Duration
	createdAt time.Time

	exited   chan int      // the reaper's report: the shell's exit code
	readDone chan struct{} // closed when read has returned
	done     chan struct{} // closed when the terminal is over

	// writeMu keeps each client write to the master in one piece.
	writeMu sync.Mutex

	mu         sync.Mutex
	replay     replayBuffer     // guarded by mu; the most recent output
	clients    map[*Client]bool // guarded by mu
	cols, rows int              // guarded by mu
	stopIdle   func() bool      // guarded by mu; the idle timer, while there are no clients
	hungUp     bool             // guarded by mu
	exitCode   int              // guarded by mu; set when over
	over       bool             // guarded by mu
}

// Info describes the terminal now.
func (t *Terminal) Info() Info {
	t.mu.Lock()
	defer t.mu.Unlock()
	return Info{ID: t.id, Session: t.session, Shell: t.shell, PID: t.pid, Cols: t.cols, Rows: t.rows,
		Clients: len(t.clients), CreatedAt: t.createdAt}
}

// read copies the master's output to the replay buffer and the clients
// until the terminal has no writer left (EIO) or the master is closed.
func (t *Terminal) read() {
	defer close(t.readDone)
	buf := make([]byte, 32<<10)
	for {
		n, err := t.master.Read(buf)
		if n > 0 {
			t.publish(bytes.Clone(buf[:n]))
		}
		if err != nil {
			return
		}
	}
}

// publish appends chunk to the replay buffer and to every client's queue.
// Clients share chunk: nobody modifies it.
func (t *Terminal) publish(chunk []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.replay.add(chunk, t.m.cfg.ReplayBytes)
	for c := range t.clients {
		c.push(chunk)
	}
}

// run waits for the shell to exit, drains what is left, and ends the
// terminal.
func (t *Terminal) run() {
	code := <-t.exited
	// Processes the shell left behind may hold the terminal open (and keep
	// read from seeing EIO); their output gets a short grace, then the
	// master is closed, which hangs them up.
	select {
	case <-t.readDone:
	case <-time.After(t.m.cfg.DrainGrace):
	}
	t.master.Close()
	<-t.readDone
	t.proc.Release()
	t.mu.Lock()
	t.over, t.exitCode = true, code
	if t.stopIdle != nil {
		t.stopIdle()
		t.stopIdle = nil
	}
	for c := range t.clients {
		c.wake()
	}
	t.mu.Unlock()
	t.m.forget(t)
	close(t.done)
}

// hangup ends the terminal as a closed console would: SIGHUP to the
// shell's process group (an interactive bash passes it on to its jobs),
// then SIGKILL to the group if the shell is still there after
// HangupGrace. Programs that ignore SIGHUP (nohup) outlive it, as they
// would a closed console.
func (t *Terminal) hangup(why string) {
	t.mu.Lock()
	if t.hungUp || t.over {
		t.mu.Unlock()
		return
	}
	t.hungUp = true
	t.mu.Unlock()
	t.signalHangup(why)
}

func (t *Terminal) signalHangup(why string) {
	t.m.cfg.Log.Info("hanging up terminal", "terminal", t.id, "why", why)
	syscall.Kill(-t.pid, syscall.SIGHUP)
	syscall.Kill(-t.pid, syscall.SIGCONT)
	go func() {
		select {
		case <-t.done:
		case <-time.After(t.m.cfg.HangupGrace):
			// The group is named by the shell's PID, which stays reserved
			// while the shell is unreaped: run has not returned yet.
			syscall.Kill(-t.pid, syscall.SIGKILL)
		}
	}()
}

// ended reports whether the terminal is over or going.
func (t *Terminal) ended() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.over || t.hungUp
}

// attachChecked attaches a client for o, which must name the terminal's
// session.
func (t *Terminal) attachChecked(o Options) (*Client, error) {
	if t.session != o.Session {
		return nil, fmt.Errorf("%w: terminal %q runs in session %q", ErrConflict, o.ID, t.session)
	}
	return t.attach()
}

// attach adds a client that first gets the replay buffer. Called with the
// manager's lock held.
func (t *Terminal) attach() (*Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.over || t.hungUp {
		return nil, ErrNotFound
	}
	if len(t.clients) >= t.m.cfg.MaxClients {
		return nil, ErrClients
	}
	c := &Client{t: t, notify: make(chan struct{}, 1)}
	if r := t.replay.snapshot(); len(r) > 0 {
		c.push(r)
	}
	t.clients[c] = true
	if t.stopIdle != nil {
		t.stopIdle()
		t.stopIdle = nil
	}
	return c, nil
}

// replayBuffer is a terminal's most recent output, up to a bound.
type replayBuffer struct {
	b       []byte
	midLine bool // output was dropped from b's front, and not up to a line's end
}

// add appends chunk and drops the oldest output beyond max bytes.
func (r *replayBuffer) add(chunk []byte, max int) {
	r.b = append(r.b, chunk...)
	if drop := len(r.b) - max; drop > 0 {
		r.midLine = r.b[drop-1] != '\n'
		r.b = r.b[drop:]
	}
}

// replayLineSearch is how far into a cut buffer a replay looks for the
// start of a line.
const replayLineSearch = 4096

// snapshot is what a new client is replayed: a copy, as the buffer keeps
// changing. A buffer that holds all the terminal's output, or was cut at
// a line's end, is replayed whole. One cut inside a line begins at the
// next line (when one is near), so that the replay does not begin inside
// an escape sequence or a character.
func (r *replayBuffer) snapshot() []byte {
	b := r.b
	if r.midLine {
		if i := bytes.IndexByte(b[:min(len(b), replayLineSearch)], '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return bytes.Clone(b)
}

// detach removes c, and starts the idle timer when it was the last.
func (t *Terminal) detach(c *Client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.clients[c] {
		return
	}
	delete(t.clients, c)
	if len(t.clients) == 0 && !t.over && !t.hungUp {
		t.stopIdle = t.m.cfg.Clock.AfterFunc(t.idle, func() {
			t.mu.Lock()
			if len(t.clients) > 0 || t.hungUp || t.over {
				t.mu.Unlock()
				return
			}
			t.hungUp = true // decided under the lock that attach takes
			t.mu.Unlock()
			t.signalHangup("idle with no clients")
		})
	}
}

// Client is one attachment to a terminal.
type Client struct {
	t      *Terminal
	notify chan struct{}

	// Guarded by t.mu.
	queue    [][]byte
	queued   int
	overflow bool
}

// push queues chunk for c. Called with t.mu held.
func (c *Client) push(chunk []byte) {
	if c.overflow {
		return
	}
	if c.queued+len(chunk) > c.t.m.cfg.ClientQueueBytes {
		c.overflow = true
		c.queue, c.queued = nil, 0
	} else {
		c.queue = append(c.queue, chunk)
		c.queued += len(chunk)
	}
	c.wake()
}

func (c *Client) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// Info describes c's terminal.
func (c *Client) Info() Info { return c.t.Info() }

// Next returns the next output for c: first the replay, then live output
// as it comes. Once the shell has exited and c has had everything, it
// returns an *ExitError; a client that fell behind gets ErrOverflow.
func (c *Client) Next(ctx context.Context) ([]byte, error) {
	for {
		c.t.mu.Lock()
		switch {
		case c.overflow:
			c.t.mu.Unlock()
			return nil, ErrOverflow
		case len(c.queue) > 0:
			chunk := c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.queued -= len(chunk)
			c.t.mu.Unlock()
			return chunk, nil
		case c.t.over:
			code := c.t.exitCode
			c.t.mu.Unlock()
			return nil, &ExitError{Code: code}
		}
		c.t.mu.Unlock()
		select {
		case <-c.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Write sends input to the terminal.
func (c *Client) Write(p []byte) (int, error) {
	c.t.writeMu.Lock()
	defer c.t.writeMu.Unlock()
	n, err := c.t.master.Write(p)
	if errors.Is(err, os.ErrClosed) {
		err = ErrNotFound
	}
	return n, err
}

// Resize sets the terminal's size.
func (c *Client) Resize(cols, rows int) error {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	if c.t.over {
		return nil
	}
	if err := setSize(c.t.master, cols, rows); err != nil {
		return err
	}
	c.t.cols, c.t.rows = cols, rows
	return nil
}

// Detach ends c's attachment. The terminal lives on; after its idle time
// without clients it is hung up.
func (c *Client) Detach() { c.t.detach(c) }
