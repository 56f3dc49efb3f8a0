package gateway

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Images on a cluster (docs/cluster.md, "Images"): each node keeps its own
// image store, and a sandbox is created from its node's. The gateway
// pre-seeds them: an import or pull goes to every ready node, with the
// caller's own credentials (so a tenant's image lands in its namespace on
// every node, as on one host); lists and inspects merge the nodes'
// answers by digest and name the nodes that have each image; a remove
// goes to every ready node. Builds stay per node.

// Headers of a fanned-out image call.
const (
	// unavailableHeader names the nodes left out because their Lease
	// expired (or they did not answer).
	unavailableHeader = "X-Sandboxd-Unavailable-Nodes"
	// cordonedHeader names the cordoned nodes an import or pull skipped.
	cordonedHeader = "X-Sandboxd-Cordoned-Nodes"
)

// maxPullBody bounds a pull's JSON body, as a node bounds it.
const maxPullBody = 1 << 20

func (s *Server) imageRoutes() {
	auth := s.authenticated
	s.mux.HandleFunc("GET /v1/images", auth(s.listImages))
	s.mux.HandleFunc("POST /v1/images/import", auth(s.imageJob(s.importImage)))
	s.mux.HandleFunc("POST /v1/images/pull", auth(s.imageJob(s.pullImage)))
	s.mux.HandleFunc("POST /v1/images/build", auth(s.buildOnNode))
	s.mux.HandleFunc("POST /v1/images/build-base", auth(s.buildOnNode))
	s.mux.HandleFunc("GET /v1/images/{name...}", auth(s.inspectImage))
	s.mux.HandleFunc("DELETE /v1/images/{name...}", auth(s.removeImage))
}

// imageJob bounds next, an import or pull, as a node bounds them
// (api.MaxImageJobsPerTenant of the caller's tenant, api.MaxImageJobs in
// all): an import is spooled to the gateway's disk whole, up to the
// nodes' --max-image-size, before it goes to the nodes. (Builds are not
// served by a gateway.)
func (s *Server) imageJob(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, err := s.imageJobs.Acquire(tenant.FromContext(r.Context()).Namespace())
		if err != nil {
			// Answer without reading the upload: net/http would read up
			// to 256 KiB of it first, which a stalled upload never sends.
			w.Header().Set("Connection", "close")
			s.writeFailure(w, r, fmt.Errorf("%w: at most %d imports and pulls of a tenant and %d in all at once", err, api.MaxImageJobsPerTenant, api.MaxImageJobs))
			return
		}
		defer release()
		next(w, r)
	}
}

// nodeAnswer is one node's answer to a fanned-out image call.
type nodeAnswer struct {
	node   string
	status int
	body   []byte
	// err is the node's error answer, or NODE_UNAVAILABLE when it did not
	// answer (or answered what no node says); nil on 2xx.
	err *api.Error
}

// imageNodes returns the ready nodes an image call goes to, and names the
// others in the answer's headers. With placing, cordoned nodes are
// skipped too (an import or pull: no sandbox is placed there).
func (s *Server) imageNodes(w http.ResponseWriter, r *http.Request, placing bool) ([]Node, bool) {
	nodes, err := s.place.list(r.Context())
	if err != nil {
		s.writeFailure(w, r, err)
		return nil, false
	}
	var out []Node
	var down, cordoned []string
	for _, n := range nodes {
		switch {
		case !n.Ready:
			down = append(down, n.Name)
		case placing && n.Cordoned:
			cordoned = append(cordoned, n.Name)
		default:
			out = append(out, n)
		}
	}
	if len(down) > 0 {
		w.Header().Set(unavailableHeader, strings.Join(down, ","))
	}
	if len(cordoned) > 0 {
		w.Header().Set(cordonedHeader, strings.Join(cordoned, ","))
	}
	if len(out) == 0 {
		writeError(w, api.Errorf(api.CodeCapacityExceeded, "no node of the cluster is ready (every node is unavailable or cordoned)"))
		return nil, false
	}
	return out, true
}

// fanOut makes the call on every node at once, each with the caller's
// credentials; body, when not nil, opens the request body for one node.
// The answers are in nodes' order.
func (s *Server) fanOut(r *http.Request, nodes []Node, method, path string, body func() (io.ReadCloser, int64, error)) []nodeAnswer {
	out := make([]nodeAnswer, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { out[i] = s.callImage(r, n, method, path, body) })
	}
	wg.Wait()
	return out
}

func (s *Server) callImage(r *http.Request, n Node, method, path string, body func() (io.ReadCloser, int64, error)) nodeAnswer {
	a := nodeAnswer{node: n.Name}
	a.err = nodeUnavailable(n.Name)
	a.err.Message = "node " + n.Name + " did not answer"
	u, err := url.Parse(n.URL)
	if err != nil || u.Host == "" {
		return a
	}
	u = u.JoinPath(path)
	u.RawQuery = r.URL.RawQuery
	var rc io.ReadCloser
	var size int64
	if body != nil {
		if rc, size, err = body(); err != nil {
			a.err = api.Errorf(api.CodeInternal, "internal error; see the gateway's log")
			s.log.ErrorContext(r.Context(), "opening an image call's body", "node", n.Name, "err", err)
			return a
		}
	}
	req, err := http.NewRequestWithContext(r.Context(), method, u.String(), rc)
	if err != nil {
		if rc != nil {
			rc.Close()
		}
		return a
	}
	req.ContentLength = size
	if ct := r.Header.Get("Content-Type"); ct != "" && body != nil {
		req.Header.Set("Content-Type", ct)
	}
	credentials(req, r)
	resp, err := s.fwd.client.Do(req)
	if err != nil {
		s.log.WarnContext(r.Context(), "node did not answer an image call", "node", n.Name, "path", path, "err", err)
		return a
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxListBytes+1))
	if err != nil || len(b) > maxListBytes {
		return a
	}
	a.status, a.body = resp.StatusCode, b
	if resp.StatusCode/100 == 2 {
		a.err = nil
		return a
	}
	var e api.Error
	if json.Unmarshal(b, &e) == nil && e.Code != "" {
		a.err = &e
	}
	return a
}

// failedOn answers the failure of a fanned-out call: the first failed
// node's code (nodes in name order), its message naming the node, and
// details.failed (node: "CODE: message") and details.succeeded (the nodes
// where the call did what it asked).
func failedOn(w http.ResponseWriter, answers []nodeAnswer, did string) bool {
	var first *api.Error
	var firstNode string
	failed := map[string]string{}
	succeeded := []string{}
	for _, a := range answers {
		if a.err == nil {
			succeeded = append(succeeded, a.node)
			continue
		}
		failed[a.node] = string(a.err.Code) + ": " + a.err.Message
		if first == nil {
			first, firstNode = a.err, a.node
		}
	}
	if first == nil {
		return false
	}
	msg := fmt.Sprintf("on node %s: %s", firstNode, first.Message)
	if len(failed) > 1 {
		msg += fmt.Sprintf(" (and %d other nodes failed)", len(failed)-1)
	}
	if len(succeeded) > 0 {
		msg += fmt.Sprintf("; the image was %s on %s", did, strings.Join(succeeded, ", "))
	}
	writeError(w, &api.Error{Code: first.Code, Message: msg,
		Details: map[string]any{"failed": failed, "succeeded": succeeded}})
	return true
}

// importImage is POST /v1/images/import: the archive is spooled once to a
// file (bounded by the nodes' image size limit), then imported to every
// ready node that takes sandboxes at once.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	nodes, ok := s.imageNodes(w, r, true)
	if !ok {
		return
	}
	f, err := os.CreateTemp(s.opts.SpoolDir, "sandboxd-import-*")
	if err != nil {
		s.writeFailure(w, r, err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	limit := s.maxImageBytes()
	body := &readErr{r: io.LimitReader(r.Body, limit+1)}
	n, err := io.Copy(f, body)
	switch {
	case err == nil:
	case r.Context().Err() != nil:
		return
	case body.err != nil:
		writeError(w, api.Errorf(api.CodeInvalidImage, "reading the archive: %v", err))
		return
	default:
		// The gateway's own disk (full, or no --spool-dir it may write).
		s.writeFailure(w, r, fmt.Errorf("spooling an imported archive: %w", err))
		return
	}
	if n > limit {
		writeError(w, api.Errorf(api.CodeImageTooLarge, "the archive is larger than %d bytes, the gateway's --max-image-size", limit))
		return
	}
	open := func() (io.ReadCloser, int64, error) {
		g, err := os.Open(f.Name())
		return g, n, err
	}
	s.answerImage(w, s.fanOut(r, nodes, http.MethodPost, "/v1/images/import", open))
}

// readErr remembers its reader's error, which io.Copy does not tell
// from its writer's.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// pullImage is POST /v1/images/pull: every ready node that takes
// sandboxes pulls the image at once.
func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) {
	nodes, ok := s.imageNodes(w, r, true)
	if !ok {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPullBody+1))
	if err != nil {
		return
	}
	if len(body) > maxPullBody {
		writeError(w, api.Errorf(api.CodeRequestTooLarge, "the body is larger than %d bytes", maxPullBody))
		return
	}
	open := func() (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil
	}
	s.answerImage(w, s.fanOut(r, nodes, http.MethodPost, "/v1/images/pull", open))
}

// answerImage answers 201 with the image when every node has it, with
// "nodes" naming them; else the failure.
func (s *Server) answerImage(w http.ResponseWriter, answers []nodeAnswer) {
	if failedOn(w, answers, "added") {
		return
	}
	writeMostHeldImage(w, http.StatusCreated, answers)
}

// writeMostHeldImage answers with status and the image of answers (each
// one node's image) that most nodes have, its "nodes" naming them: nodes
// may hold different images under one name (a tag that moved during a
// pull).
func writeMostHeldImage(w http.ResponseWriter, status int, answers []nodeAnswer) {
	merged, err := mergeImages(answers, func(b []byte) ([]api.Image, error) {
		var img api.Image
		err := json.Unmarshal(b, &img)
		return []api.Image{img}, err
	})
	if err != nil || len(merged) == 0 {
		writeError(w, api.Errorf(api.CodeInternal, "a node answered an image the gateway cannot read"))
		return
	}
	slices.SortStableFunc(merged, func(a, b api.Image) int { return len(b.Nodes) - len(a.Nodes) })
	writeJSON(w, status, merged[0])
}

// listImages is GET /v1/images: the images of every ready node, merged by
// digest, each with the nodes that have it.
func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	nodes, ok := s.imageNodes(w, r, false)
	if !ok {
		return
	}
	answers := s.reachable(w, s.fanOut(r, nodes, http.MethodGet, "/v1/images", nil))
	for _, a := range answers {
		if a.err != nil {
			writeError(w, a.err)
			return
		}
	}
	merged, err := mergeImages(answers, func(b []byte) ([]api.Image, error) {
		var l api.ImageList
		err := json.Unmarshal(b, &l)
		return l.Images, err
	})
	if err != nil {
		writeError(w, api.Errorf(api.CodeInternal, "a node answered a list the gateway cannot read"))
		return
	}
	writeJSON(w, http.StatusOK, api.ImageList{Images: merged})
}

// inspectImage is GET /v1/images/{name}: the image as the nodes that have
// it see it; IMAGE_NOT_FOUND when none has it.
func (s *Server) inspectImage(w http.ResponseWriter, r *http.Request) {
	nodes, ok := s.imageNodes(w, r, false)
	if !ok {
		return
	}
	answers := s.reachable(w, s.fanOut(r, nodes, http.MethodGet, "/v1/images/"+r.PathValue("name"), nil))
	var found []nodeAnswer
	for _, a := range answers {
		if a.err == nil {
			found = append(found, a)
		}
	}
	switch {
	case len(found) > 0:
		writeMostHeldImage(w, http.StatusOK, found)
	case len(answers) > 0:
		writeError(w, answers[0].err)
	default:
		writeError(w, nodeUnavailable(nodes[0].Name))
	}
}

// removeImage is DELETE /v1/images/{name}, on every ready node at once.
// A node that does not have it counts as done; any other failure
// (IMAGE_IN_USE on one node) is the answer, naming what was removed
// elsewhere.
func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	nodes, ok := s.imageNodes(w, r, false)
	if !ok {
		return
	}
	answers := s.fanOut(r, nodes, http.MethodDelete, "/v1/images/"+r.PathValue("name"), nil)
	removed := 0
	var notFound *api.Error
	for i, a := range answers {
		if a.err != nil && a.err.Code == api.CodeImageNotFound {
			notFound = a.err
			answers[i].err = nil
			continue
		}
		if a.err == nil {
			removed++
		}
	}
	if failedOn(w, answers, "removed (or absent)") {
		return
	}
	if removed == 0 && notFound != nil {
		writeError(w, notFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// reachable drops the answers of nodes that did not answer, adding them
// to the unavailable header.
func (s *Server) reachable(w http.ResponseWriter, answers []nodeAnswer) []nodeAnswer {
	var down []string
	out := answers[:0:0]
	for _, a := range answers {
		if a.err != nil && a.status == 0 {
			down = append(down, a.node)
			continue
		}
		out = append(out, a)
	}
	if len(down) > 0 {
		if h := w.Header().Get(unavailableHeader); h != "" {
			down = append(strings.Split(h, ","), down...)
		}
		w.Header().Set(unavailableHeader, strings.Join(down, ","))
	}
	return out
}

// mergeImages merges the images of the nodes' 2xx answers by identity
// (the digest; the names for the host image, which has none), with the
// names of every node and "nodes" naming those that have it; ordered by
// first name, then digest.
func mergeImages(answers []nodeAnswer, decode func([]byte) ([]api.Image, error)) ([]api.Image, error) {
	byKey := map[string]*api.Image{}
	var keys []string
	for _, a := range answers {
		if a.err != nil {
			continue
		}
		imgs, err := decode(a.body)
		if err != nil {
			return nil, err
		}
		for _, img := range imgs {
			key := img.Digest
			if key == "" {
				key = "names:" + strings.Join(img.Names, ",")
			}
			m, ok := byKey[key]
			if !ok {
				img.Nodes = nil
				m = &img
				byKey[key] = m
				keys = append(keys, key)
			}
			for _, n := range img.Names {
				if !slices.Contains(m.Names, n) {
					m.Names = append(m.Names, n)
				}
			}
			if !slices.Contains(m.Nodes, a.node) {
				m.Nodes = append(m.Nodes, a.node)
			}
		}
	}
	out := make([]api.Image, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	// "host" first, as a node lists it.
	slices.SortStableFunc(out, func(a, b api.Image) int {
		return cmp.Or(compareBool(a.Source != "host", b.Source != "host"),
			cmp.Compare(firstName(a), firstName(b)), cmp.Compare(a.Digest, b.Digest))
	})
	return out, nil
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func firstName(img api.Image) string {
	if len(img.Names) == 0 {
		return "\xff" // unnamed images last
	}
	return img.Names[0]
}

// buildOnNode answers builds on a gateway: a build's context and log
// stream belong to one node's builder.
func (s *Server) buildOnNode(w http.ResponseWriter, r *http.Request) {
	writeError(w, api.Errorf(api.CodeNotSupportedOnGateway,
		"%s is not served by a cluster's gateway: build on one node (its own URL), save the image and import it through the gateway, which copies it to every node", r.URL.Path))
}

func (s *Server) maxImageBytes() int64 {
	if s.opts.MaxImageBytes > 0 {
		return s.opts.MaxImageBytes
	}
	return defaultMaxImageBytes
}

// defaultMaxImageBytes is the nodes' default --max-image-size.
const defaultMaxImageBytes = 32 << 30
