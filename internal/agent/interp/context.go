package interp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Context is one code context: an interpreter process and its state.
// Runs in a context are serialised; different contexts run in parallel.
type Context struct {
	m         *Manager
	id        string
	lang      Language
	cwd       string
	createdAt time.Time
	proc      *process

	slot    chan struct{} // holds a value while a run executes
	waiting atomic.Int32  // runs holding a ticket (queued or executing)

	mu       sync.Mutex
	lastUsed time.Time
	running  bool
	count    int // execution count reported by the driver
}

// Info describes a context.
type Info struct {
	ID             string
	Language       Language
	Cwd            string
	CreatedAt      time.Time
	LastUsed       time.Time
	Running        bool
	Terminated     bool
	ExecutionCount int
}

// ID returns the context's ID.
func (c *Context) ID() string { return c.id }

// Language returns the context's language.
func (c *Context) Language() Language { return c.lang }

// Terminated reports whether the context's interpreter is gone.
func (c *Context) Terminated() bool {
	select {
	case <-c.proc.dead:
		return true
	default:
		return c.proc.exited.Load()
	}
}

// Info describes the context now.
func (c *Context) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Info{
		ID: c.id, Language: c.lang, Cwd: c.cwd, CreatedAt: c.createdAt, LastUsed: c.lastUsed,
		Running: c.running, Terminated: c.Terminated(), ExecutionCount: c.count,
	}
}

// Ticket is a place in a context's queue. Release it when done.
type Ticket struct {
	c    *Context
	once sync.Once
}

// Enqueue takes a place in the context's queue, or fails with ErrBusy when
// the queue is full and ErrTerminated when the interpreter is gone.
func (c *Context) Enqueue() (*Ticket, error) {
	if c.Terminated() {
		return nil, c.terminatedError()
	}
	if int(c.waiting.Add(1)) > c.m.cfg.MaxQueue+1 {
		c.waiting.Add(-1)
		return nil, ErrBusy
	}
	c.m.active.Add(1)
	return &Ticket{c: c}, nil
}

// Release gives the place back. It is idempotent.
func (t *Ticket) Release() {
	t.once.Do(func() {
		t.c.waiting.Add(-1)
		t.c.m.active.Add(-1)
	})
}

func (c *Context) terminatedError() error {
	return fmt.Errorf("%w: %s", ErrTerminated, c.proc.describeExit())
}

// Run runs code in the context once the runs queued before it are done,
// and reports to sink as it goes. The run is interrupted when it passes
// timeout, or when ctx ends or sink fails (the caller went away); the
// context keeps its state unless the interpreter does not come back from
// the interrupt within KillGrace, in which case it is killed. A run whose
// interpreter dies returns an error matching ErrTerminated.
//
// Errors raised by the code are not errors of Run: they go to
// sink.Error and Run succeeds.
func (t *Ticket) Run(ctx context.Context, code string, timeout time.Duration, sink Sink) (Outcome, error) {
	defer t.Release()
	c := t.c
	p := c.proc
	select {
	case c.slot <- struct{}{}:
	case <-p.dead:
		return Outcome{}, c.terminatedError()
	case <-ctx.Done():
		return Outcome{}, context.Cause(ctx)
	}
	defer func() { <-c.slot }()
	if c.Terminated() {
		return Outcome{}, c.terminatedError()
	}
	start := time.Now()
	c.setRunning(true)
	defer c.setRunning(false)
	sink.Begin(c)

	if c.lang != Python {
		js, terr := c.m.transpile(ctx, c.lang, code)
		if terr != nil {
			err := sink.Error(*terr)
			return Outcome{ExecutionCount: c.executionCount(), Duration: time.Since(start)}, err
		}
		code = js
	}

	r := &run{sink: sink, room: c.m.cfg.MaxOutputBytes, done: make(chan frame, 1), sinkErr: make(chan error, 1), timeout: timeout}
	p.setListener(r)
	defer p.setListener(nil)
	if err := p.send(ctx, request{Type: "run", Code: code}); err != nil {
		if errors.Is(err, ErrTerminated) || c.Terminated() {
			return Outcome{}, c.terminatedError()
		}
		// The driver did not take the request: the protocol is out of
		// step, and the context cannot be trusted any more.
		p.fail(fmt.Sprintf("sending the code: %v", err))
		return Outcome{}, err
	}

	var timer <-chan time.Time
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		timer = tm.C
	}
	var grace <-chan time.Time
	interrupted := false
	interrupt := func() {
		if interrupted {
			return
		}
		interrupted = true
		p.interrupt()
		gt := time.NewTimer(c.m.cfg.KillGrace)
		// Stopped when Run returns: the channel is only read below.
		grace = gt.C
		timer = nil
	}
	ctxDone := ctx.Done()
	for {
		select {
		case f := <-r.done:
			p.setListener(nil) // from here on only this goroutine calls the sink
			c.setCount(f.ExecutionCount)
			r.finishTimeout()
			return Outcome{
				ExecutionCount: f.ExecutionCount,
				Duration:       time.Since(start),
				TimedOut:       r.timedOut.Load(),
				Truncated:      r.truncated,
			}, nil
		case <-p.dead:
			// A done frame may have come just before the end.
			select {
			case f := <-r.done:
				c.setCount(f.ExecutionCount)
				return Outcome{ExecutionCount: f.ExecutionCount, Duration: time.Since(start), TimedOut: r.timedOut.Load(), Truncated: r.truncated}, nil
			default:
			}
			return Outcome{ExecutionCount: c.executionCount(), Duration: time.Since(start), Truncated: r.truncated}, c.terminatedError()
		case <-timer:
			r.timedOut.Store(true)
			interrupt()
		case <-ctxDone:
			ctxDone = nil
			interrupt()
		case <-r.sinkErr:
			interrupt()
		case <-grace:
			grace = nil
			p.fail("it did not stop within " + c.m.cfg.KillGrace.String() + " of an interrupt")
		}
	}
}

func (c *Context) setRunning(b bool) {
	c.mu.Lock()
	c.running = b
	c.lastUsed = time.Now().UTC()
	c.mu.Unlock()
}

func (c *Context) setCount(n int) {
	c.mu.Lock()
	if n > c.count {
		c.count = n
	}
	c.mu.Unlock()
}

func (c *Context) executionCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// run is the listener of one run: it forwards output and frames to the
// sink within the output budget.
type run struct {
	sink      Sink
	room      int // bytes of output and results still reportable
	truncated bool
	failed    bool // the sink failed; nothing more goes to it
	reported  bool // an error went to the sink
	timeout   time.Duration
	timedOut  atomic.Bool
	done      chan frame
	sinkErr   chan error
}

func (r *run) fail(err error) {
	if err == nil || r.failed {
		return
	}
	r.failed = true
	select {
	case r.sinkErr <- err:
	default:
	}
}

// take reserves n bytes of the budget, or marks the run truncated.
func (r *run) take(n int) bool {
	if n > r.room {
		r.truncated = true
		r.room = 0
		return false
	}
	r.room -= n
	return true
}

func (r *run) output(st Stream, p []byte) {
	if r.failed {
		return
	}
	if len(p) > r.room {
		r.truncated = true
		p = p[:r.room]
	}
	if len(p) == 0 {
		return
	}
	r.room -= len(p)
	r.fail(r.sink.Output(st, p))
}

func (r *run) frame(f frame) {
	switch f.Type {
	case "result":
		res := f.result()
		size := 0
		for _, v := range res.Data {
			size += len(v)
		}
		if res.Truncated {
			r.truncated = true
		}
		if r.failed || !r.take(size) {
			return
		}
		r.fail(r.sink.Result(res))
	case "error":
		e := ExecError{Name: f.Name, Value: f.Value, Traceback: f.Traceback}
		if r.timedOut.Load() {
			e = r.timeoutError(e.Traceback)
		}
		r.reported = true
		if !r.failed {
			r.fail(r.sink.Error(e))
		}
	case "done":
		select {
		case r.done <- f:
		default:
		}
	}
}

// timeoutError is the error of a run interrupted at its timeout; the
// traceback shows where it was.
func (r *run) timeoutError(tb []string) ExecError {
	if tb == nil {
		tb = []string{}
	}
	return ExecError{
		Name:      "TimeoutError",
		Value:     fmt.Sprintf("the run did not finish within its timeout of %s and was interrupted; the context keeps its state", r.timeout),
		Traceback: tb,
	}
}

// finishTimeout reports a timeout whose interrupt the code swallowed (it
// caught KeyboardInterrupt and ended by itself). The pump no longer calls
// the run: the done frame was its last.
func (r *run) finishTimeout() {
	if r.timedOut.Load() && !r.reported && !r.failed {
		r.reported = true
		r.fail(r.sink.Error(r.timeoutError(nil)))
	}
}
