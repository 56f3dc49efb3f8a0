package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/copybuf"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// maxBufferedBody is the largest request body forward reads into memory
// before passing it on: enough for any JSON call (exec with its stdin).
// Larger bodies and raw uploads stream.
const maxBufferedBody = api.MaxCommandBytes + 2*api.MaxStdinBytes + 64<<10

// forward serves /v1/sandboxes/{id}/{rest...} by passing the request to
// the sandbox's agent as /{rest...}, creating or starting the sandbox
// first if needed, when it matches a public route of agentapi.Routes:
// anything else is answered here (404, or 405 with Allow) and never
// reaches, creates or wakes a sandbox. The route's entry decides the rest:
// its metric, its copy buffers, whether its event stream is guarded, and
// whether a call cut off before any answer is sent again. Responses
// stream, event streams are flushed event by event, WebSocket upgrades
// pass through.
//
// JSON bodies are read first (they are bounded), which lets a call whose
// agent turns out to be dead be retried once on a freshly started
// sandbox: the agent can die between two calls without the daemon having
// seen it yet (a dying init first waits for every other process of its
// PID namespace), and that next call must not fail for it.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	start := time.Now()
	rest := r.PathValue("rest")
	route, allow, ok := agentapi.Match(r.Method, "/"+rest)
	if !ok {
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeAPIError(w, api.Errorf(api.CodeMethodNotAllowed, "%s is not allowed here; use %s", r.Method, strings.Join(allow, ", ")))
			return
		}
		writeAPIError(w, api.Errorf(api.CodeNotFound, "no route %s %s", r.Method, r.URL.Path))
		return
	}
	defer s.observeExec(route.Metric, start)
	body, err := s.bufferBody(w, r)
	if err != nil {
		if e := bodyTimeoutError(err, s.bodyTimeout()); e != nil {
			writeAPIError(w, e)
			return
		}
		writeAPIError(w, api.Errorf(api.CodeInvalidJSON, "reading request body: %v", err))
		return
	}
	if !body.streams {
		s.forwardAttempts(w, r, id, rest, route, body)
		return
	}
	// A streamed body: the agent may answer (an event stream's headers,
	// say) before the transport has sent all of it. Without full duplex,
	// writing those headers makes the server discard the rest of the body
	// under the transport's feet.
	if err := fullduplex.Enable(w); err != nil {
		s.log.Debug("full duplex unavailable", "err", err)
	}
	s.forwardAttempts(w, r, id, rest, route, body)
	// A call refused before it reached an agent, an agent that could not
	// be reached, or one that answered first, left the body unread.
	fullduplex.EndBody(w, r)
}

// callBody is a call's body as forward passes it on.
type callBody struct {
	data []byte // read into memory, unless it streams
	// streams: the body is r's own, passed on as it arrives; it cannot be
	// sent twice.
	streams bool
}

// forwardAttempts passes r to the agent, once more after a failure as
// forward says.
func (s *Server) forwardAttempts(w http.ResponseWriter, r *http.Request, id, rest string, route agentapi.Route, body callBody) {
	for attempt := 1; ; attempt++ {
		// The call goes to the agent at once even when it creates the
		// sandbox from the warm pool: its answer waits for the sandbox's
		// registry row instead (proxy, Lease.Settle).
		lease, err := s.opts.Manager.AcquireForCall(r.Context(), id)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if !body.streams {
			r.Body = io.NopCloser(bytes.NewReader(body.data))
		}
		failure := s.proxyLeased(w, r, id, rest, route, lease, !body.streams && attempt == 1)
		switch failure {
		case reached:
			return
		case clientGone:
			abortResponse()
		}
		// The agent could not be reached. Make sure the manager knows, then
		// try once more on a fresh start — but only if the request cannot
		// have run (it never connected, or the agent turns out to have died
		// on its own, with everything it was running), or if running it
		// twice does no harm.
		died := s.opts.Manager.Reset(r.Context(), id, lease)
		if failure == notConnected || died || route.Idempotent {
			s.log.Warn("agent unreachable; restarted the sandbox, retrying the call", "sandbox", id, "path", rest)
			continue
		}
		s.countError(api.CodeSandboxUnavailable)
		writeAPIError(w, api.Errorf(api.CodeSandboxUnavailable,
			"the sandbox's agent did not answer; the call may not have run"))
		return
	}
}

// attempt outcomes of proxy.
type failure int

const (
	reached      failure = iota // the agent answered
	notConnected                // no connection to the agent could be made
	cutOff                      // connected, but cut before any answer
	clientGone                  // the client left (or half-closed) before any answer
)

// abortResponse ends the handler without an answer: the server closes
// the connection instead of sending one. A handler that returns without
// writing gets an implicit "200 OK" with an empty body, which a client
// that half-closed its side (shutdown(SHUT_WR) after a complete request,
// which cancels the request's context) would read as success although
// its command never ran.
func abortResponse() { panic(http.ErrAbortHandler) }

// proxyLeased is proxy with the lease released however it ends (the
// reverse proxy panics with http.ErrAbortHandler when a response breaks
// mid-way).
func (s *Server) proxyLeased(w http.ResponseWriter, r *http.Request, id, rest string, route agentapi.Route, lease *sandbox.Lease, retryable bool) failure {
	defer lease.Release()
	return s.proxy(w, r, id, rest, route, lease, retryable)
}

// bufferBody reads a JSON body (bounded in size and time) into memory;
// other bodies are left to stream.
func (s *Server) bufferBody(w http.ResponseWriter, r *http.Request) (callBody, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return callBody{}, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return callBody{streams: true}, nil
	}
	if r.ContentLength > maxBufferedBody {
		return callBody{streams: true}, nil // the agent answers REQUEST_TOO_LARGE
	}
	data, err := s.readBody(w, r, maxBufferedBody+1)
	if err != nil {
		return callBody{}, err
	}
	if len(data) > maxBufferedBody {
		// Too large to buffer: pass on what was read and the rest.
		liftBodyDeadline(w)
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(data), r.Body), r.Body}
		return callBody{streams: true}, nil
	}
	return callBody{data: data}, nil
}

// proxy passes one attempt of the request to the agent. When retryable and
// the agent gave no answer at all, it writes nothing and says how it
// failed, so the caller may retry.
//
// A call that created its sandbox from the warm pool names the agent
// (agentapi.NameHeader, which callers can never send: it is stripped from
// every request) and reaches it while the sandbox's registry row is still
// being written. Nothing of the agent's answer passes before the row is
// (Lease.Settle in ModifyResponse, so an event stream's first byte waits
// too); if it could not be written, the caller gets that error instead.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request, id, rest string, route agentapi.Route, lease *sandbox.Lease, retryable bool) (f failure) {
	buffers := callBuffers
	if route.Bulk {
		buffers = bulkBuffers
	}
	name := lease.AgentName()
	host := lease.AgentHost()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = host // the lease's transport sends it as it is
			pr.Out.URL.Path = "/" + rest
			pr.Out.URL.RawPath = ""
			pr.Out.Host = "agent"
			// The agent must never see the API token.
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
			stripTokenSubprotocol(pr.Out.Header)
			pr.Out.Header.Del(agentapi.NameHeader)
			if name != "" {
				pr.Out.Header.Set(agentapi.NameHeader, name)
			}
		},
		Transport:     lease.Transport,
		FlushInterval: -1,
		BufferPool:    buffers,
		ModifyResponse: func(resp *http.Response) error {
			if name != "" {
				lease.AgentNamed(name)
			}
			if err := lease.Settle(r.Context()); err != nil {
				return &unsettledError{err}
			}
			s.countAgentError(resp)
			if route.Stream {
				guardEventStream(resp, func(err error) {
					s.countError(api.CodeSandboxUnavailable)
					s.log.Warn("event stream from the agent ended without a terminal event", "sandbox", id, "path", rest, "err", err)
				})
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				f = clientGone // the client went away: nobody to answer
				return
			}
			// A create whose row could not be written tore its sandbox
			// down, which may be why the agent did not answer: the
			// create's error is the answer.
			var unsettled *unsettledError
			if errors.As(err, &unsettled) {
				s.writeError(w, r, unsettled.err)
				return
			}
			if serr := lease.Settle(r.Context()); serr != nil {
				s.writeError(w, r, serr)
				return
			}
			if retryable && isDialError(err) {
				f = notConnected
				return
			}
			if retryable && isCutOff(err) {
				f = cutOff
				return
			}
			s.log.Warn("agent unreachable", "sandbox", id, "path", rest, "err", err)
			s.countError(api.CodeSandboxUnavailable)
			writeAPIError(w, api.Errorf(api.CodeSandboxUnavailable,
				"the sandbox's agent did not answer; the call may not have run"))
		},
	}
	proxy.ServeHTTP(w, r)
	return f
}

// unsettledError is the error of a create that failed after its first
// call reached the agent (Lease.Settle).
type unsettledError struct{ err error }

func (e *unsettledError) Error() string { return e.err.Error() }
func (e *unsettledError) Unwrap() error { return e.err }

// isCutOff reports whether err means the connection to the agent broke
// before any answer.
func isCutOff(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// isDialError reports whether err means the request never reached the
// agent: its socket was gone or refused the connection.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// guardEventStream makes sure an event stream from an agent ends with a
// terminal event: if the agent dies or the connection breaks first, the
// client gets an `error` event rather than a stream that just stops.
func guardEventStream(resp *http.Response, onLost func(error)) {
	if strings.HasPrefix(resp.Header.Get("Content-Type"), sse.ContentType) {
		resp.Body = &streamGuard{upstream: resp.Body, onLost: onLost}
	}
}

// streamGuard passes whole events through as soon as they are complete,
// holding back only a trailing partial event, and remembers whether a
// terminal event went by: by its name alone (api.IsTerminal), the one
// end-of-stream rule, so the guard never reads an event's data.
type streamGuard struct {
	upstream io.ReadCloser
	// buf holds what was read from upstream: buf[:sent] went to the
	// reader, buf[sent:ready] are complete events not yet passed on, and
	// buf[ready:] is a partial event, searched for its end up to scanned.
	buf                  []byte
	sent, ready, scanned int
	terminal             bool
	done                 bool
	onLost               func(error)
}

// Read fills p with complete events. It reads upstream into p itself, so
// a stream costs no buffer beyond its partial event.
func (g *streamGuard) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for g.sent == g.ready {
		if g.done {
			return 0, io.EOF
		}
		g.compact()
		n, err := g.upstream.Read(p)
		g.buf = append(g.buf, p[:n]...)
		g.release()
		if err != nil {
			g.done = true
			if !g.terminal {
				g.buf = append(g.buf[:g.ready], lostStreamEvent()...)
				g.ready = len(g.buf)
				if g.onLost != nil {
					g.onLost(err)
				}
			}
			if !errors.Is(err, io.EOF) && g.sent == g.ready {
				return 0, err
			}
		}
	}
	n := copy(p, g.buf[g.sent:g.ready])
	g.sent += n
	return n, nil
}

// compact drops what was passed on, keeping the partial event.
func (g *streamGuard) compact() {
	if g.sent == 0 {
		return
	}
	n := copy(g.buf, g.buf[g.sent:])
	g.buf = g.buf[:n]
	g.ready -= g.sent
	g.scanned -= g.sent
	g.sent = 0
}

// release marks every complete event in buf as ready.
func (g *streamGuard) release() {
	for {
		from := max(g.scanned-1, g.ready) // "\n\n" may straddle two reads
		i := bytes.Index(g.buf[from:], []byte("\n\n"))
		if i < 0 {
			g.scanned = len(g.buf)
			return
		}
		end := from + i + 2
		if name, ok := eventName(g.buf[g.ready:end]); ok && api.IsTerminal(string(name)) {
			g.terminal = true
		}
		g.ready, g.scanned = end, end
	}
}

// eventName returns the value of an event's "event:" line. It walks the
// lines by hand: an event passes here on every stream's every read, and
// this allocates nothing.
func eventName(event []byte) ([]byte, bool) {
	for len(event) > 0 {
		line, rest, _ := bytes.Cut(event, []byte("\n"))
		if name, ok := bytes.CutPrefix(line, []byte("event:")); ok {
			return bytes.TrimSpace(name), true
		}
		event = rest
	}
	return nil, false
}

func (g *streamGuard) Close() error { return g.upstream.Close() }

func lostStreamEvent() []byte {
	data, _ := json.Marshal(api.ExecEvent{
		Type:      api.EventError,
		Timestamp: time.Now().UTC(),
		Code:      api.CodeSandboxUnavailable,
		Message:   "the sandbox's agent stopped answering before the operation finished; its outcome is unknown",
	})
	return []byte("event: error\ndata: " + string(data) + "\n\n")
}

// callBuffers and bulkBuffers lend the proxy its copy buffers (see
// package copybuf).
//
// The routes that move file contents (agentapi.Route.Bulk: files/raw,
// files/archive) get 256 KiB instead of the default 32 KiB: with a flush
// after every write, a 1 GiB download then costs 8 times fewer read,
// write and flush rounds (a third less of the daemon's CPU per GiB in
// bench.BenchmarkFileTransfer). Other routes, event streams among them,
// keep the small default: a buffer is held for as long as the response
// lasts.
var (
	callBuffers = copybuf.Default
	bulkBuffers = copybuf.New(256 << 10)
)
