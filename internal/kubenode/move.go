package kubenode

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/agent/files"
	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/snapshot"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Mover is what a node needs of the sandbox manager to move sandboxes to
// and from other nodes (sandbox/move.go).
type Mover interface {
	HoldForMove(ctx context.Context, id, node string) (sandbox.Info, error)
	ReleaseMove(id string) error
	CopyForMove(ctx context.Context, id string) (sandbox.Info, *snapshot.Copy, error)
	FinishMove(ctx context.Context, id string) error
	MoveIn(ctx context.Context, id string, cfg sandbox.Config, createdAt time.Time, layer string) (sandbox.Info, error)
	NewMoveDir() (string, error)
}

// The node-to-node routes of a move (docs/cluster.md, "Moving
// sandboxes"). Only the cluster's token (the admin's) may call them; the
// gateway drives them and the node a sandbox moves to pulls its files
// from the node it leaves.
const (
	// MovePrefix is where they live on a node.
	MovePrefix = "/v1/cluster/sandboxes/"
	// FilesDigestTrailer carries the SHA-256 of the files' tar stream,
	// sent after it.
	FilesDigestTrailer = "Sandboxd-Files-Sha256"
)

// Bounds of a move: the time a transfer may take, a JSON body, and the
// space the moved-in files must leave free on the node's disk.
const (
	moveTimeout  = 30 * time.Minute
	maxMoveBody  = 4 << 10
	diskReserve  = 1 << 30
	maxTrailerIn = 1 << 20
)

// MoveRequest is the body of a hold (Node: where the sandbox goes) and
// of a move-in (From: the node it comes from).
type MoveRequest struct {
	Node string `json:"node,omitempty"`
	From string `json:"from,omitempty"`
}

// moveConfig is what GET .../config answers: the sandbox's resolved
// configuration and when it was made.
type moveConfig struct {
	Config    sandbox.Config `json:"config"`
	CreatedAt time.Time      `json:"createdAt"`
}

// Handler serves the move routes below MovePrefix with the cluster's
// token, and everything else with next.
func (n *Node) Handler(next http.Handler, token string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+MovePrefix+"{id}/hold", n.hold)
	mux.HandleFunc("DELETE "+MovePrefix+"{id}/hold", n.release)
	mux.HandleFunc("GET "+MovePrefix+"{id}/config", n.config)
	mux.HandleFunc("GET "+MovePrefix+"{id}/files", n.files)
	mux.HandleFunc("POST "+MovePrefix+"{id}/move-in", n.moveIn)
	mux.HandleFunc("POST "+MovePrefix+"{id}/finish", n.finish)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, MovePrefix) {
			next.ServeHTTP(w, r)
			return
		}
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) != 1 || token == "" {
			writeErr(w, api.Errorf(api.CodeUnauthorized, "the cluster's move routes need the cluster's token"))
			return
		}
		if _, pattern := mux.Handler(r); pattern == "" {
			writeErr(w, api.Errorf(api.CodeNotFound, "no route %s %s", r.Method, r.URL.Path))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (n *Node) mover() Mover { return n.o.Moves }

// routeID returns the route's validated sandbox ID, scoped to the tenant
// of the query's tenant= (none: the admin namespace), as the sandbox
// manager names it.
func routeID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := api.ValidateSandboxID(id); err != nil {
		writeErr(w, api.Errorf(api.CodeInvalidSandboxID, "%v", err))
		return "", false
	}
	t := r.URL.Query().Get("tenant")
	if t == tenant.Default {
		t = ""
	}
	if t != "" {
		if err := tenant.ValidateName(t); err != nil {
			writeErr(w, api.Errorf(api.CodeValidationFailed, "tenant %.64q: %v", t, err))
			return "", false
		}
	}
	return tenant.Scope(t, id), true
}

// readMove reads a bounded MoveRequest.
func readMove(w http.ResponseWriter, r *http.Request) (MoveRequest, bool) {
	var req MoveRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxMoveBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, api.Errorf(api.CodeValidationFailed, "body: want {\"node\": NAME} or {\"from\": NAME}: %v", err))
		return req, false
	}
	return req, true
}

// hold is POST .../{id}/hold {"node": TARGET}: nothing starts the
// sandbox from now on, until finish or release.
func (n *Node) hold(w http.ResponseWriter, r *http.Request) {
	id, ok := routeID(w, r)
	if !ok {
		return
	}
	req, ok := readMove(w, r)
	if !ok {
		return
	}
	if err := kube.ValidateNodeName(req.Node); err != nil || req.Node == n.o.Name {
		writeErr(w, api.Errorf(api.CodeValidationFailed, "node %.64q: want another node's name", req.Node))
		return
	}
	inf, err := n.mover().HoldForMove(r.Context(), id, req.Node)
	if err != nil {
		writeErr(w, classify(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "status": inf.Status, "node": req.Node})
}

// release is DELETE .../{id}/hold: the move did not happen.
func (n *Node) release(w http.ResponseWriter, r *http.Request) {
	id, ok := routeID(w, r)
	if !ok {
		return
	}
	if err := n.mover().ReleaseMove(id); err != nil {
		writeErr(w, classify(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// config is GET .../{id}/config: the sandbox's configuration.
func (n *Node) config(w http.ResponseWriter, r *http.Request) {
	id, ok := routeID(w, r)
	if !ok {
		return
	}
	inf, err := n.o.Sandboxes.Get(r.Context(), id)
	if err != nil {
		writeErr(w, classify(err))
		return
	}
	writeJSON(w, http.StatusOK, moveConfig{Config: inf.Config, CreatedAt: inf.CreatedAt})
}

// files is GET .../{id}/files: the held sandbox's writable layer as a tar
// stream (agent/files' Export, the format of file transfers and backups),
// owners 0-based, its SHA-256 in a trailer.
func (n *Node) files(w http.ResponseWriter, r *http.Request) {
	id, ok := routeID(w, r)
	if !ok {
		return
	}
	_, cp, err := n.mover().CopyForMove(r.Context(), id)
	if err != nil {
		writeErr(w, classify(err))
		return
	}
	defer cp.Discard()
	fsys, err := files.Open(cp.Dir())
	if err != nil {
		writeErr(w, classify(err))
		return
	}
	h := sha256.New()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Trailer", FilesDigestTrailer)
	w.WriteHeader(http.StatusOK)
	if err := fsys.Export(r.Context(), "/", io.MultiWriter(w, h), files.ExportOptions{}); err != nil {
		// No trailer: the receiver refuses a stream without its digest.
		n.o.Log.Warn("sending a moving sandbox's files", "sandbox", id, "err", err)
		panic(http.ErrAbortHandler)
	}
	w.Header().Set(FilesDigestTrailer, hex.EncodeToString(h.Sum(nil)))
}

// finish is POST .../{id}/finish: the cluster names the other node now;
// the copy here is destroyed.
func (n *Node) finish(w http.ResponseWriter, r *http.Request) {
	id, ok := routeID(w, r)
	if !ok {
		return
	}
	if err := n.mover().FinishMove(r.Context(), id); err != nil {
		writeErr(w, classify(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// moveIn is POST .../{id}/move-in {"from": SOURCE}: this node pulls the
// held sandbox's configuration and files from the source node (found by
// its Lease, never a URL from the caller) and makes it here, stopped.
func (n *Node) moveIn(w http.ResponseWriter, r *http.Request) {
	id, ok := routeID(w, r)
	if !ok {
		return
	}
	req, ok := readMove(w, r)
	if !ok {
		return
	}
	if err := kube.ValidateNodeName(req.From); err != nil || req.From == n.o.Name {
		writeErr(w, api.Errorf(api.CodeValidationFailed, "from %.64q: want another node's name", req.From))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), moveTimeout)
	defer cancel()
	inf, err := n.pull(ctx, id, req.From, r.Header.Get("Authorization"))
	if err != nil {
		n.o.Log.Warn("moving a sandbox in", "sandbox", id, "from", req.From, "err", err)
		writeErr(w, classify(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "status": inf.Status, "node": n.o.Name})
}

// pull fetches sandbox id from node from and makes it here.
func (n *Node) pull(ctx context.Context, id, from, auth string) (sandbox.Info, error) {
	base, err := n.nodeURL(ctx, from)
	if err != nil {
		return sandbox.Info{}, err
	}
	t, local := tenant.Split(id)
	prefix := base + MovePrefix + url.PathEscape(local)
	query := ""
	if t != "" {
		query = "?tenant=" + url.QueryEscape(t)
	}
	var mc moveConfig
	if err := n.getJSON(ctx, prefix+"/config"+query, auth, &mc); err != nil {
		return sandbox.Info{}, fmt.Errorf("reading the sandbox's configuration from %s: %w", from, err)
	}
	dir, err := n.mover().NewMoveDir()
	if err != nil {
		return sandbox.Info{}, err
	}
	defer os.RemoveAll(dir) // MoveIn took it, or the move failed
	if err := n.receive(ctx, prefix+"/files"+query, auth, dir); err != nil {
		return sandbox.Info{}, fmt.Errorf("receiving the sandbox's files from %s: %w", from, err)
	}
	return n.mover().MoveIn(ctx, id, mc.Config, mc.CreatedAt, dir)
}

// nodeURL is the API URL node name registered in its Lease.
func (n *Node) nodeURL(ctx context.Context, name string) (string, error) {
	nodes, err := n.o.Client.ListNodes(ctx, time.Now())
	if err != nil {
		return "", err
	}
	for _, nd := range nodes {
		if nd.Name == name {
			if nd.State == kube.NodeUnavailable {
				return "", &api.Error{Code: api.CodeNodeUnavailable, Message: "node " + name + " is unavailable", Details: map[string]any{"node": name}}
			}
			return strings.TrimSuffix(nd.Status.URL, "/"), nil
		}
	}
	return "", api.Errorf(api.CodeNodeNotFound, "no node %q is registered", name)
}

func (n *Node) get(ctx context.Context, u, auth string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := n.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e api.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Code != "" {
			return nil, &e
		}
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	return resp, nil
}

func (n *Node) getJSON(ctx context.Context, u, auth string, out any) error {
	resp, err := n.get(ctx, u, auth)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out)
}

// receive unpacks the files' tar stream at u into dir: bounded by the
// free space of dir's disk, checked against the SHA-256 trailer, and
// refused if it holds a device node other than a whiteout.
func (n *Node) receive(ctx context.Context, u, auth, dir string) error {
	resp, err := n.get(ctx, u, auth)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		return err
	}
	room := int64(sfs.Bavail)*sfs.Bsize - diskReserve
	if room <= 0 {
		return fmt.Errorf("%w: this node's disk is full", sandbox.ErrCapacity)
	}
	h := sha256.New()
	body := &boundedReader{r: io.TeeReader(resp.Body, h), left: room}
	fsys, err := files.Open(dir)
	if err != nil {
		return err
	}
	if _, err := fsys.Import(ctx, "/", body); err != nil {
		return body.explain(err)
	}
	// The tar reader stops at the archive's end; the rest (padding) is
	// hashed too, and reading to EOF makes the trailer readable.
	if _, err := io.Copy(io.Discard, io.LimitReader(body, maxTrailerIn)); err != nil {
		return body.explain(err)
	}
	if err := checkDigest(resp.Trailer.Get(FilesDigestTrailer), h); err != nil {
		return err
	}
	return refuseDevices(dir)
}

func checkDigest(want string, h hash.Hash) error {
	if want == "" {
		return errors.New("the stream ended without its digest (the sending node failed mid-way)")
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("the files' SHA-256 is %s, the sender announced %s", got, want)
	}
	return nil
}

// refuseDevices fails if dir holds a device node that is not an overlay
// whiteout (character device 0/0): a sandbox must not get one from a
// transfer.
func refuseDevices(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeDevice == 0 {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			return nil
		}
		return fmt.Errorf("%w: the files hold a device node %s", sandbox.ErrInvalid, strings.TrimPrefix(p, dir))
	})
}

// boundedReader fails once more than left bytes were read.
type boundedReader struct {
	r    io.Reader
	left int64
	over bool
}

var errTooLarge = errors.New("the files are larger than this node's free disk")

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.over = true
		return 0, errTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	k, err := b.r.Read(p)
	b.left -= int64(k)
	return k, err
}

func (b *boundedReader) explain(err error) error {
	if b.over {
		return fmt.Errorf("%w: %w", sandbox.ErrCapacity, errTooLarge)
	}
	return err
}

// classify maps a move's error to its wire form.
func classify(err error) *api.Error {
	var ae *api.Error
	var me *sandbox.MovingError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &me):
		return &api.Error{Code: api.CodeSandboxMoving, Message: me.Error(), Details: map[string]any{"node": me.Node}}
	case errors.Is(err, sandbox.ErrNotFound):
		return api.Errorf(api.CodeSandboxNotFound, "%v", err)
	case errors.Is(err, sandbox.ErrImageNotFound):
		return api.Errorf(api.CodeImageNotFound, "%v", err)
	case errors.Is(err, snapshot.ErrNotFound):
		return api.Errorf(api.CodeSnapshotNotFound, "%v", err)
	case errors.Is(err, sandbox.ErrConflict), errors.Is(err, sandbox.ErrLost):
		return api.Errorf(api.CodeSandboxStateConflict, "%v", err)
	case errors.Is(err, sandbox.ErrUnsupported):
		return api.Errorf(api.CodeUnsupportedByRuntime, "%v", err)
	case errors.Is(err, sandbox.ErrCapacity):
		return api.Errorf(api.CodeCapacityExceeded, "%v", err)
	case errors.Is(err, sandbox.ErrInvalid):
		return api.Errorf(api.CodeValidationFailed, "%v", err)
	}
	return api.Errorf(api.CodeInternal, "%v", err)
}

func writeErr(w http.ResponseWriter, e *api.Error) {
	if e.Code == api.CodeSandboxMoving || e.Code == api.CodeNodeUnavailable || e.Code == api.CodeCapacityExceeded {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, e.Code.HTTPStatus(), e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
