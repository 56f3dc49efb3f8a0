package agent

import (
	"encoding/base64"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/internal/agent/session"
)

// execStream runs a command and streams its output as Server-Sent Events:
// start, any number of stdout and stderr, then exactly one of complete or
// error. Errors found before the command is queued (validation, unknown
// session, full queue) are plain JSON error responses instead.
func (s *server) execStream(w http.ResponseWriter, r *http.Request) {
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
	ticket, err := sess.Enqueue()
	if err != nil {
		writeError(w, s.apiError(err))
		return
	}
	defer ticket.Release()

	ew := newEventWriter(w, s.writeTimeout)
	// The stream is accepted: say so now, and keep it alive from now on,
	// because the command may wait in the queue behind a long one before
	// its start event.
	w.WriteHeader(http.StatusOK)
	ew.rc.Flush()
	hb := startHeartbeat(s.keepalive, ew.lastWrite, ew.keepalive)
	defer hb.stop()
	out := &streamOutput{ew: ew, sessionID: call.sessionID, command: call.command}
	res, err := ticket.Exec(r.Context(), call.cmd, out)
	out.flush()
	if !out.began {
		out.Begin() // a stream always opens with start
	}
	if err != nil {
		aerr := s.apiError(err)
		ew.send(api.EventError, &api.ExecEvent{
			Type: api.EventError, Timestamp: now(), Code: aerr.Code, Message: aerr.Message,
		})
		return
	}
	s.log.DebugContext(r.Context(), "exec stream", "session", call.sessionID, "exit", res.ExitCode, "took", res.Duration)
	code := res.ExitCode
	ew.send(api.EventComplete, &api.ExecEvent{
		Type: api.EventComplete, Timestamp: now(), ExitCode: &code, Duration: res.Duration.Milliseconds(),
	})
}

func now() time.Time { return time.Now().UTC() }

// streamOutput turns output chunks into events as they arrive: no batching,
// no timers. A chunk never ends inside a UTF-8 character: an incomplete
// trailing sequence (at most 3 bytes) is held back until the next chunk of
// the same stream, or the end. A chunk that is not valid UTF-8 is sent
// base64-encoded with its encoding named.
type streamOutput struct {
	ew                 *eventWriter
	sessionID, command string
	began              bool
	runes              runeHolder
}

func (o *streamOutput) Begin() {
	o.began = true
	o.ew.send(api.EventStart, &api.ExecEvent{
		Type: api.EventStart, Timestamp: now(), Command: o.command, SessionID: o.sessionID,
	})
}

func (o *streamOutput) Write(st session.Stream, p []byte) error {
	data := o.runes.next(int(st), p)
	if len(data) == 0 {
		return o.ew.err()
	}
	return o.sendChunk(st, data)
}

// flush sends what is held back, as it is.
func (o *streamOutput) flush() {
	for _, st := range []session.Stream{session.Stdout, session.Stderr} {
		if rest := o.runes.rest(int(st)); len(rest) > 0 {
			o.sendChunk(st, rest)
		}
	}
}

func (o *streamOutput) sendChunk(st session.Stream, p []byte) error {
	ev := api.ExecEvent{Type: api.EventStdout, Timestamp: now()}
	if st == session.Stderr {
		ev.Type = api.EventStderr
	}
	if utf8.Valid(p) {
		ev.Data = string(p)
	} else {
		ev.Data = base64.StdEncoding.EncodeToString(p)
		ev.Encoding = api.EncodingBase64
	}
	return o.ew.send(ev.Type, &ev)
}

// eventWriter serialises the events and keepalives of one stream and gives
// each write a deadline, so that a client that stops reading cannot hold a
// command (and its session) for ever: the failed write aborts the command.
type eventWriter struct {
	rc      *http.ResponseController
	timeout time.Duration
	born    time.Time
	last    atomic.Int64 // time of the last write, as nanoseconds since born

	mu     sync.Mutex
	sse    *sse.Writer
	failed error
}

func newEventWriter(w http.ResponseWriter, timeout time.Duration) *eventWriter {
	return &eventWriter{rc: http.NewResponseController(w), timeout: timeout, born: time.Now(), sse: sse.NewWriter(w)}
}

func (ew *eventWriter) send(name string, ev *api.ExecEvent) error {
	return ew.write(func() error { return ew.sse.Send(name, ev) })
}

// sendEvent sends an event of another stream type (process logs).
func (ew *eventWriter) sendEvent(name string, v any) error {
	return ew.write(func() error { return ew.sse.Send(name, v) })
}

func (ew *eventWriter) keepalive() error { return ew.write(ew.sse.Keepalive) }

func (ew *eventWriter) write(f func() error) error {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	if ew.failed != nil {
		return ew.failed
	}
	ew.rc.SetWriteDeadline(time.Now().Add(ew.timeout)) // unsupported: no deadline
	ew.failed = f()
	ew.last.Store(int64(time.Since(ew.born)))
	return ew.failed
}

func (ew *eventWriter) err() error {
	ew.mu.Lock()
	defer ew.mu.Unlock()
	return ew.failed
}

func (ew *eventWriter) lastWrite() time.Time { return ew.born.Add(time.Duration(ew.last.Load())) }

// heartbeat calls beat whenever nothing was written for interval. It reads
// the time of the last write instead of being told about each one, so the
// hot path of a stream costs it nothing.
type heartbeat struct {
	quit chan struct{}
	done chan struct{}
}

func startHeartbeat(interval time.Duration, last func() time.Time, beat func() error) *heartbeat {
	h := &heartbeat{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		t := time.NewTimer(interval)
		defer t.Stop()
		for {
			select {
			case <-h.quit:
				return
			case <-t.C:
			}
			if idle := time.Since(last()); idle < interval {
				t.Reset(interval - idle)
				continue
			}
			if beat() != nil {
				return
			}
			t.Reset(interval)
		}
	}()
	return h
}

// stop stops the heartbeat and waits for its goroutine.
func (h *heartbeat) stop() {
	close(h.quit)
	<-h.done
}
