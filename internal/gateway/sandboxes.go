package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/proxy"
)

// Bounds of a create's body, which the gateway reads whole to learn the
// memory it asks for: the nodes' own bound on JSON bodies, and the time a
// client may take to send it.
const (
	maxCreateBody     = 1 << 20
	createBodyTimeout = 30 * time.Second
)

// ensureSandbox is PUT /v1/sandboxes/{id}: placed where it is, or claimed
// on the least loaded node that fits the options' memory.
func (s *Server) ensureSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	body, err := readCreateBody(w, r)
	if err != nil {
		if errors.Is(err, errBodyTooLarge) {
			writeError(w, api.Errorf(api.CodeRequestTooLarge, "the body is over %d bytes", maxCreateBody))
		} else {
			writeError(w, api.Errorf(api.CodeRequestTimeout, "the body did not arrive in time"))
		}
		return
	}
	want, e := createWants(body)
	if e != nil {
		writeError(w, e)
		return
	}
	node, err := s.placeOn(r, id, want, body)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	s.fwd.forward(w, r, node, target{withNode: true})
}

// readCreateBody reads r's body whole, within its bounds.
func readCreateBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(createBodyTimeout))
	defer rc.SetReadDeadline(time.Time{})
	b, err := io.ReadAll(io.LimitReader(r.Body, maxCreateBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCreateBody {
		return nil, errBodyTooLarge
	}
	return b, nil
}

// wants is what placement needs of a create: the memory limit it asks
// for (0: the node's default; an instance type's memory is the node's
// business and counts as its default) and its nodeSelector.
type wants struct {
	memory   int64
	selector map[string]string
}

// createWants reads a create body's wants. A body that is not valid JSON
// wants nothing (the node refuses it with its code); a malformed
// nodeSelector is refused here, before anything is placed.
func createWants(body []byte) (wants, *api.Error) {
	var o struct {
		Limits struct {
			MemoryBytes int64 `json:"memoryBytes"`
		} `json:"limits"`
		NodeSelector map[string]string `json:"nodeSelector"`
	}
	if json.Unmarshal(body, &o) != nil {
		return wants{}, nil
	}
	if err := api.ValidateNodeLabels("nodeSelector", o.NodeSelector); err != nil {
		return wants{}, err.(*api.Error)
	}
	return wants{memory: max(o.Limits.MemoryBytes, 0), selector: o.NodeSelector}, nil
}

// placeOn returns the node sandbox id is on, placing it if it is new.
func (s *Server) placeOn(r *http.Request, id string, want wants, options []byte) (Node, error) {
	name, err := s.place.place(r.Context(), id, want.memory, want.selector, options)
	if err != nil {
		return Node{}, err
	}
	return s.nodeOf(r, name)
}

// placedOn returns the node of an existing sandbox (ErrNotPlaced).
func (s *Server) placedOn(r *http.Request, id string) (Node, error) {
	name, err := s.place.lookup(r.Context(), id)
	if err != nil {
		return Node{}, err
	}
	return s.nodeOf(r, name)
}

// nodeOf returns the named node; one that left the directory is
// unavailable, as one whose Lease expired.
func (s *Server) nodeOf(r *http.Request, name string) (Node, error) {
	n, err := s.place.node(r.Context(), name)
	if errors.Is(err, ErrNodeNotFound) {
		return Node{}, nodeUnavailable(name)
	}
	return n, err
}

// existing forwards GET and PATCH /v1/sandboxes/{id}, which never create.
func (s *Server) existing(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	node, err := s.placedOn(r, id)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	s.fwd.forward(w, r, node, target{withNode: true})
}

// destroySandbox forwards DELETE /v1/sandboxes/{id}, then releases the
// placement once the node has no such sandbox.
func (s *Server) destroySandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	node, err := s.placedOn(r, id)
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	rec := &statusRecorder{ResponseWriter: w}
	s.fwd.forward(rec, r, node, target{})
	if rec.status == http.StatusNoContent || rec.status == http.StatusNotFound {
		s.place.forget(id)
		if err := s.opts.Directory.Release(r.Context(), id); err != nil {
			s.log.ErrorContext(r.Context(), "releasing a destroyed sandbox's placement", "sandbox", id, "err", err)
		}
	}
}

// lifecycleRoutes answer a Sandbox and never create one.
var lifecycleRoutes = map[string]bool{
	"POST stop": true, "POST start": true, "POST restart": true, "POST renew": true,
	"POST pause": true, "POST resume": true,
}

// noCreateRoutes never create a sandbox either; the rest of the routes
// below a sandbox create it on their first call.
var noCreateRoutes = map[string]bool{"GET network": true}

// sandboxCall forwards /v1/sandboxes/{id}/{rest...}: exec, files,
// processes, streams, terminals and the rest, creating the sandbox on its
// first call as a node does.
func (s *Server) sandboxCall(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	key := r.Method + " " + r.PathValue("rest")
	var node Node
	var err error
	if lifecycleRoutes[key] || noCreateRoutes[key] {
		node, err = s.placedOn(r, id)
	} else {
		node, err = s.placeOn(r, id, wants{}, nil)
	}
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	s.fwd.forward(w, r, node, target{withNode: lifecycleRoutes[key]})
}

// statusRecorder remembers the status a handler answered with. It keeps
// the flusher and hijacker of the writer it wraps.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// servePreviewHost forwards a request to a preview host to its sandbox's
// node, Host kept (the node checks the token), and reports whether r was
// one. Unknown sandboxes get PREVIEW_NOT_FOUND, as from a node.
func (s *Server) servePreviewHost(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.PreviewDomain == "" {
		return false
	}
	_, id, _, ok := api.ParsePreviewHost(r.Host, s.opts.PreviewDomain)
	if !ok {
		if !proxy.InDomain(r.Host, s.opts.PreviewDomain) {
			return false
		}
		writeError(w, api.Errorf(api.CodePreviewNotFound, "no preview at this address"))
		return true
	}
	node, err := s.placedOn(r, id)
	if errors.Is(err, ErrNotPlaced) {
		node, err = s.tenantPreviewNode(r, id)
	}
	if errors.Is(err, ErrNotPlaced) {
		writeError(w, api.Errorf(api.CodePreviewNotFound, "no preview at this address"))
		return true
	}
	if err != nil {
		s.writeFailure(w, r, err)
		return true
	}
	s.fwd.forward(w, r, node, target{keepHost: true})
	return true
}
