package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex"
	"github.com/sandboxd/sandboxd/internal/copybuf"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// forwarder sends calls to nodes through one reverse proxy. Responses are
// flushed as they arrive (FlushInterval -1): SSE streams, raw file streams
// and exec output reach the caller as the node writes them, and nothing is
// held beyond the copy buffer. WebSocket upgrades are spliced both ways by
// the proxy. Hop-by-hop headers are dropped both ways. X-Forwarded-For,
// -Host and -Proto are set afresh on preview hosts; an API call's own pass
// (see rewrite).
type forwarder struct {
	s     *Server
	proxy *httputil.ReverseProxy
	// client makes the gateway's own calls to nodes (lists, drains).
	client *http.Client
}

// target is where one forwarded call goes, carried in its context.
type target struct {
	node Node
	base *url.URL
	// keepHost: send the caller's Host (preview hosts), not the node's.
	keepHost bool
	// withNode: the answer is a Sandbox (or a list of them) whose "node"
	// the gateway fills in.
	withNode bool
	// sandbox is the ID the call is about ("" for preview hosts).
	sandbox string
}

type targetKey struct{}

// dialTimeout bounds connecting to a node: a node that is gone but whose
// Lease has not expired yet answers NODE_UNAVAILABLE after at most this.
const dialTimeout = 3 * time.Second

// maxSandboxJSON bounds a Sandbox answer the gateway rewrites.
const maxSandboxJSON = 1 << 20

func newForwarder(s *Server) *forwarder {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ExpectContinueTimeout: time.Second,
	}
	f := &forwarder{s: s, client: &http.Client{Transport: tr}}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:        f.rewrite,
		Transport:      tr,
		FlushInterval:  -1,
		BufferPool:     copybuf.Default,
		ErrorHandler:   f.failed,
		ModifyResponse: f.modify,
		// The proxy's own complaints (a copy cut short by a client that
		// left) are not the operator's business above debug.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return f
}

func (f *forwarder) rewrite(pr *httputil.ProxyRequest) {
	t := pr.In.Context().Value(targetKey{}).(*target)
	pr.SetURL(t.base)
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	if t.keepHost {
		// A preview host: anyone may call it, so what it says of itself
		// is replaced.
		pr.Out.Host = pr.In.Host
		pr.SetXForwarded()
		return
	}
	// An API call carries the cluster's token, with which a node trusts a
	// caller's own X-Forwarded-* (its ports' proxy routes hand them to the
	// service: a user's front-end server, such as the SDK's PreviewHandler,
	// names its own host). They pass as the node would take them, with
	// the caller's address added to X-Forwarded-For.
	host, proto := pr.In.Header.Get("X-Forwarded-Host"), pr.In.Header.Get("X-Forwarded-Proto")
	if v := pr.In.Header.Values("X-Forwarded-For"); len(v) > 0 {
		pr.Out.Header["X-Forwarded-For"] = v
	}
	pr.SetXForwarded()
	if host != "" {
		pr.Out.Header.Set("X-Forwarded-Host", host)
	}
	if proto != "" {
		pr.Out.Header.Set("X-Forwarded-Proto", proto)
	}
}

// forward sends r to node. The node must be ready.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, node Node, t target) {
	if !node.Ready {
		writeError(w, nodeUnavailable(node.Name))
		return
	}
	base, err := url.Parse(node.URL)
	if err != nil || base.Host == "" {
		writeError(w, nodeUnavailable(node.Name))
		return
	}
	t.node, t.base = node, base
	if id := r.PathValue("id"); id != "" {
		t.sandbox = tenant.ScopeContext(r.Context(), id)
	}
	// A node may answer before it has read the whole body (a preview's
	// service echoing an upload as it arrives); without full duplex the
	// server would cut the rest of the body off once the answer starts.
	fullduplex.Enable(w)
	f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, &t)))
	// A node that could not be reached, or answered first, left the body
	// unread.
	fullduplex.EndBody(w, r)
}

func nodeUnavailable(node string) *api.Error {
	return &api.Error{Code: api.CodeNodeUnavailable,
		Message: "the sandbox's node " + node + " is unavailable; retry later",
		Details: map[string]any{"node": node}}
}

// failed answers a call the node did not answer: NODE_UNAVAILABLE, the
// cause in the log. A caller that left gets nothing.
func (f *forwarder) failed(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	t := r.Context().Value(targetKey{}).(*target)
	f.s.log.WarnContext(r.Context(), "node did not answer", "node", t.node.Name, "method", r.Method, "path", r.URL.Path, "err", err)
	f.s.place.invalidate()
	writeError(w, nodeUnavailable(t.node.Name))
}

// modify fills in "node" in Sandbox answers, and forgets the cached
// placement of a sandbox whose node answered 503.
func (f *forwarder) modify(resp *http.Response) error {
	t := resp.Request.Context().Value(targetKey{}).(*target)
	if resp.StatusCode == http.StatusServiceUnavailable && t.sandbox != "" {
		// SANDBOX_MOVING among others: the sandbox may be on another
		// node by the client's retry, which must not meet this cache.
		f.s.place.forget(t.sandbox)
	}
	if !t.withNode || resp.StatusCode/100 != 2 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSandboxJSON+1))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if out, ok := withNode(body, t.node.Name); ok {
		body = out
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// withNode returns the JSON object b with "node" set, or false when b is
// not an object (or too large to have been a Sandbox).
func withNode(b []byte, node string) ([]byte, bool) {
	if len(b) > maxSandboxJSON {
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, false
	}
	n, _ := json.Marshal(node)
	m["node"] = n
	out, err := json.Marshal(m)
	if err != nil {
		return nil, false
	}
	return append(out, '\n'), true
}

// errBodyTooLarge is a create body past the nodes' own limit.
var errBodyTooLarge = errors.New("body too large")
