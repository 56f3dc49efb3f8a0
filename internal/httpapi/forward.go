package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// forward serves /v1/sandboxes/{id}/{rest...} by passing the request to
// the sandbox's agent as /{rest...}, creating or starting the sandbox
// first if needed. Bodies stream both ways; event streams are flushed
// event by event; WebSocket upgrades pass through.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	start := time.Now()
	rest := r.PathValue("rest")
	defer s.observeExec(rest, start)
	lease, err := s.opts.Manager.Acquire(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer lease.Release()
	// The agent may answer (an event stream's headers, say) before the
	// transport has finished sending it the request body. Without full
	// duplex, writing those headers makes the server discard the rest of
	// the body under the transport's feet, which then drops the agent
	// connection mid-stream.
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		s.log.Debug("full duplex unavailable", "err", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "agent"
			pr.Out.URL.Path = "/" + rest
			pr.Out.URL.RawPath = ""
			pr.Out.Host = "agent"
			// The agent must never see the API token.
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
		},
		Transport:     lease.Transport,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			s.countAgentError(resp)
			guardEventStream(resp, func(err error) {
				s.countError(api.CodeSandboxUnavailable)
				s.log.Warn("event stream from the agent ended without a terminal event", "sandbox", id, "path", rest, "err", err)
			})
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away; nobody to answer
			}
			s.log.Warn("agent unreachable", "sandbox", id, "path", rest, "err", err)
			s.countError(api.CodeSandboxUnavailable)
			writeAPIError(w, api.Errorf(api.CodeSandboxUnavailable,
				"the sandbox's agent did not answer; the call may not have run"))
		},
	}
	proxy.ServeHTTP(w, r)
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
// terminal event went by.
type streamGuard struct {
	upstream io.ReadCloser
	pending  []byte // bytes read but not yet past an event boundary
	out      []byte // complete events ready for the reader
	terminal bool
	done     bool
	onLost   func(error)
}

func (g *streamGuard) Read(p []byte) (int, error) {
	for len(g.out) == 0 {
		if g.done {
			return 0, io.EOF
		}
		buf := make([]byte, 32<<10)
		n, err := g.upstream.Read(buf)
		g.pending = append(g.pending, buf[:n]...)
		g.release()
		if err != nil {
			g.done = true
			if !g.terminal {
				g.out = append(g.out, lostStreamEvent()...)
				if g.onLost != nil {
					g.onLost(err)
				}
			}
			if !errors.Is(err, io.EOF) && len(g.out) == 0 {
				return 0, err
			}
		}
	}
	n := copy(p, g.out)
	g.out = g.out[n:]
	return n, nil
}

// release moves every complete event from pending to out.
func (g *streamGuard) release() {
	for {
		i := bytes.Index(g.pending, []byte("\n\n"))
		if i < 0 {
			return
		}
		event := g.pending[:i+2]
		if name, ok := eventName(event); ok && api.IsTerminal(name) {
			g.terminal = true
		}
		g.out = append(g.out, event...)
		g.pending = g.pending[i+2:]
	}
}

func eventName(event []byte) (string, bool) {
	for _, line := range bytes.Split(event, []byte("\n")) {
		if name, ok := bytes.CutPrefix(line, []byte("event:")); ok {
			return string(bytes.TrimSpace(name)), true
		}
	}
	return "", false
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
