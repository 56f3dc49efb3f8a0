package e2b

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

// E2B's PTYs (Start with a pty, input as pty bytes, Update to resize,
// SendSignal to kill) are sandboxd terminals: each runs in a session of
// its own (the user, envs and cwd E2B asked for), and this layer holds
// one terminal connection per PTY for as long as the shell lives, so
// input and resizes work whether or not a stream is attached, as with
// envd.

// ptyOutBuffer bounds the chunks queued for an attached stream; a stream
// that falls that far behind is cut off (it may attach again).
const ptyOutBuffer = 256

type ptyBook struct {
	mu    sync.Mutex
	boxes map[string]map[uint32]*ptyProc
}

func newPTYBook() *ptyBook { return &ptyBook{boxes: map[string]map[uint32]*ptyProc{}} }

type ptyProc struct {
	t       *client.Terminal
	termID  string
	session string
	pid     uint32
	config  processConfig
	done    chan struct{} // closed once the shell has exited

	mu       sync.Mutex
	sub      chan []byte // the attached stream's queue, nil: none
	exited   bool
	exitCode int
}

func (b *ptyBook) get(sandboxID string, pid uint32) (*ptyProc, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, ok := b.boxes[sandboxID][pid]
	return p, ok
}

func (b *ptyBook) has(sandboxID string, pid uint32) bool {
	_, ok := b.get(sandboxID, pid)
	return ok
}

func (b *ptyBook) add(sandboxID string, p *ptyProc) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.boxes[sandboxID] == nil {
		b.boxes[sandboxID] = map[uint32]*ptyProc{}
	}
	b.boxes[sandboxID][p.pid] = p
}

func (b *ptyBook) remove(sandboxID string, pid uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.boxes[sandboxID], pid)
}

// forget drops a sandbox's PTYs (it was killed or paused), closing the
// connections this layer held.
func (b *ptyBook) forget(sandboxID string) {
	b.mu.Lock()
	ptys := b.boxes[sandboxID]
	delete(b.boxes, sandboxID)
	b.mu.Unlock()
	for _, p := range ptys {
		p.t.Close()
	}
}

func (b *ptyBook) list(sandboxID string) []processInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []processInfo
	for _, p := range b.boxes[sandboxID] {
		out = append(out, processInfo{PID: p.pid, Config: p.config})
	}
	return out
}

func (b *ptyBook) input(sandboxID string, pid uint32, data []byte) error {
	p, ok := b.get(sandboxID, pid)
	if !ok {
		return rpcErrorf(codeNotFound, "no PTY with pid %d", pid)
	}
	_, err := p.t.Write(data)
	return err
}

func (b *ptyBook) resize(sandboxID string, pid uint32, size ptySize) error {
	p, ok := b.get(sandboxID, pid)
	if !ok {
		return rpcErrorf(codeNotFound, "no PTY with pid %d", pid)
	}
	if err := validSize(size); err != nil {
		return err
	}
	return p.t.Resize(int(size.Cols), int(size.Rows))
}

// kill hangs the PTY's shell up and removes its session.
func (b *ptyBook) kill(ctx context.Context, c *call, pid uint32) error {
	p, ok := b.get(c.id, pid)
	if !ok {
		return rpcErrorf(codeNotFound, "no PTY with pid %d", pid)
	}
	sb := c.s.sdk.Sandbox(c.id)
	if err := sb.CloseTerminal(ctx, p.termID); err != nil && !errors.Is(err, client.ErrNotFound) {
		return err
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
	return nil
}

func validSize(s ptySize) error {
	if s.Cols < 1 || s.Cols > 1000 || s.Rows < 1 || s.Rows > 1000 {
		return rpcErrorf(codeInvalidArgument, "pty size %dx%d: cols and rows 1 to 1000", s.Cols, s.Rows)
	}
	return nil
}

// pump reads the terminal until it ends, handing output to the attached
// stream, then records the exit and removes the PTY.
func (p *ptyProc) pump(b *ptyBook, sandboxID string, cleanup func()) {
	defer cleanup()
	buf := make([]byte, 32<<10)
	for {
		n, err := p.t.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			p.mu.Lock()
			if p.sub != nil {
				select {
				case p.sub <- chunk:
				default:
					close(p.sub) // too far behind: cut off
					p.sub = nil
				}
			}
			p.mu.Unlock()
		}
		if err != nil {
			break
		}
	}
	code, ok := p.t.ExitCode()
	if !ok {
		code = -1
	}
	p.mu.Lock()
	p.exited, p.exitCode = true, code
	if p.sub != nil {
		close(p.sub)
		p.sub = nil
	}
	p.mu.Unlock()
	b.remove(sandboxID, p.pid)
	p.t.Close()
	close(p.done)
}

// subscribe attaches a stream, replacing any other.
func (p *ptyProc) subscribe() chan []byte {
	ch := make(chan []byte, ptyOutBuffer)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sub != nil {
		close(p.sub)
	}
	p.sub = ch
	return ch
}

func (p *ptyProc) unsubscribe(ch chan []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sub == ch {
		p.sub = nil
		close(ch)
	}
}

// startPTY serves a Start with a pty: a sandboxd terminal in a session
// made for it, streamed as pty data events.
func (c *call) startPTY(w http.ResponseWriter, r *http.Request, req startRequest, deadline time.Duration) {
	if err := validSize(req.PTY.Size); err != nil {
		writeStreamError(w, err)
		return
	}
	ctx := r.Context()
	cwd := home(c.user)
	if req.Process.Cwd != nil && *req.Process.Cwd != "" {
		var err error
		if cwd, err = c.resolve(*req.Process.Cwd); err != nil {
			writeStreamError(w, err)
			return
		}
	}
	n := c.s.procs.seq.Add(1)
	sid := "e2b-pty-" + strconv.FormatUint(n, 10)
	sreq := api.CreateSessionRequest{ID: sid, User: c.user, Cwd: cwd, Env: req.Process.Envs}
	if c.user == "root" {
		sreq.User = ""
	}
	if err := c.s.up.call(ctx, http.MethodPost, sandboxPath(c.id, "sessions"), sreq, nil); err != nil {
		writeStreamError(w, err)
		return
	}
	sb := c.s.sdk.Sandbox(c.id)
	dropSession := func() {
		// Not cancelled with the request, but still for its tenant.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = c.s.up.call(dctx, http.MethodDelete, sandboxPath(c.id, "sessions/"+sid), nil, nil)
	}
	// The terminal outlives this request: its connection is the PTY's.
	t, err := sb.Terminal(context.WithoutCancel(ctx), client.TerminalOptions{
		ID: sid, Session: sid, Shell: "/bin/bash", Cols: int(req.PTY.Size.Cols), Rows: int(req.PTY.Size.Rows),
	})
	if err != nil {
		dropSession()
		writeStreamError(w, err)
		return
	}
	p := &ptyProc{t: t, termID: sid, session: sid, pid: uint32(t.Info().PID), config: req.Process, done: make(chan struct{})}
	sub := p.subscribe()
	c.s.ptys.add(c.id, p)
	go p.pump(c.s.ptys, c.id, dropSession)
	c.relayPTY(w, r, p, sub, deadline)
}

// attachPTY serves Connect to a PTY.
func (c *call) attachPTY(w http.ResponseWriter, r *http.Request, pid uint32, deadline time.Duration) {
	p, ok := c.s.ptys.get(c.id, pid)
	if !ok {
		writeStreamError(w, rpcErrorf(codeNotFound, "process with pid %d not found", pid))
		return
	}
	c.relayPTY(w, r, p, p.subscribe(), deadline)
}

// relayPTY streams a PTY's output until it exits, the stream is replaced
// or its client leaves (the PTY keeps running, as with envd), or the
// Connect deadline passes (the PTY is killed, as envd does).
func (c *call) relayPTY(w http.ResponseWriter, r *http.Request, p *ptyProc, sub chan []byte, deadline time.Duration) {
	ctx := r.Context()
	defer p.unsubscribe(sub)
	sw := newStreamWriter(w)
	if sw.send(eventMessage{Event: processEvent{Start: &startEvent{PID: p.pid}}}) != nil {
		return
	}
	stop := keepalive(r, sw, func() any { return eventMessage{Event: processEvent{Keepalive: &struct{}{}}} })
	defer stop()
	var expired <-chan time.Time
	if deadline > 0 {
		t := time.NewTimer(deadline)
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case chunk, ok := <-sub:
			if !ok {
				p.mu.Lock()
				exited, code := p.exited, p.exitCode
				p.mu.Unlock()
				if !exited {
					sw.end(rpcErrorf(codeResourceExhausted, "the stream fell too far behind the terminal's output, or another stream attached"))
					return
				}
				_ = sw.send(eventMessage{Event: processEvent{End: &endEvent{ExitCode: int32(code), Exited: code >= 0 && code < 128, Status: "exit status " + strconv.Itoa(code)}}})
				sw.end(nil)
				return
			}
			if sw.send(eventMessage{Event: processEvent{Data: &dataEvent{PTY: chunk}}}) != nil {
				return
			}
		case <-expired:
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = c.s.ptys.kill(kctx, c, p.pid)
			cancel()
			sw.end(rpcErrorf(codeDeadlineExceeded, "the PTY ran past its timeout of %s and was killed", deadline))
			return
		case <-ctx.Done():
			return
		}
	}
}

var _ io.Writer = (*client.Terminal)(nil)
