package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/sandboxd/sandboxd/api"
)

// maxEventBytes bounds one SSE event a node sends into a merged stream.
const maxEventBytes = 64 << 10

// events is GET /v1/events: the lifecycle streams of every node that is
// ready when the call starts, each asked with the caller's credentials
// (so each node sends what the caller may see), merged event by event.
// The merged stream ends, with an error event, when any node's stream
// ends or the caller leaves: a client reconnects, as after a node's own
// stream ended. Nodes that join later are not in it.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	nodes, err := s.place.list(r.Context())
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var bodies []*http.Response
	var names []string
	var wg sync.WaitGroup
	// On return: stop the node streams and wait for their readers, which
	// must not touch w after this handler returns.
	defer func() {
		cancel()
		for _, b := range bodies {
			b.Body.Close()
		}
		wg.Wait()
	}()
	var down []string
	for _, n := range nodes {
		if !n.Ready {
			down = append(down, n.Name)
			continue
		}
		resp, err := s.openEvents(ctx, r, n)
		if err != nil {
			s.log.WarnContext(r.Context(), "node's event stream", "node", n.Name, "err", err)
			down = append(down, n.Name)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			// The node refused the query (a bad ?sandbox=): its answer is ours.
			defer resp.Body.Close()
			w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
			w.WriteHeader(resp.StatusCode)
			bufio.NewReader(resp.Body).WriteTo(w)
			return
		}
		bodies = append(bodies, resp)
		names = append(names, n.Name)
	}
	if len(down) > 0 {
		w.Header().Set("X-Sandboxd-Unavailable-Nodes", strings.Join(down, ","))
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	// mu lets one event at a time into w; done (under mu) stops writers
	// once the merged stream has ended.
	var mu sync.Mutex
	done := false
	ended := make(chan string, len(bodies))
	for i, resp := range bodies {
		name := names[i]
		wg.Go(func() {
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 4096), maxEventBytes)
			sc.Split(splitEvents)
			for sc.Scan() {
				mu.Lock()
				var err error
				if !done {
					if _, err = w.Write(append(sc.Bytes(), '\n', '\n')); err == nil {
						err = rc.Flush()
					}
				}
				stop := done || err != nil
				mu.Unlock()
				if stop {
					break
				}
			}
			ended <- name
		})
	}
	var name string
	select {
	case <-ctx.Done():
		return
	case name = <-ended:
	}
	mu.Lock()
	defer mu.Unlock()
	done = true
	fmt.Fprintf(w, "event: %s\ndata: {\"type\":%q,\"code\":%q,\"message\":%q}\n\n", api.EventError, api.EventError,
		api.CodeNodeUnavailable, "node "+name+"'s event stream ended; reconnect")
	rc.Flush()
}

func (s *Server) openEvents(ctx context.Context, r *http.Request, n Node) (*http.Response, error) {
	u, err := url.Parse(n.URL)
	if err != nil {
		return nil, err
	}
	u = u.JoinPath("/v1/events")
	u.RawQuery = r.URL.RawQuery
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	credentials(req, r)
	return s.fwd.client.Do(req)
}

// splitEvents splits an SSE stream into events (blocks that end with a
// blank line), without the blank line.
func splitEvents(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		return i + 2, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
