package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/inflight"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Options configure a gateway.
type Options struct {
	Directory Directory
	// Token is the bearer token callers send, the nodes' own (they check
	// it again): cluster-up and the manifests give every node and gateway
	// the same token file.
	Token string
	// PreviewDomain is the domain of preview hosts
	// ({port}-{id}-{token}.DOMAIN), the nodes' --preview-domain.
	PreviewDomain string
	// Keys are the cluster's API keys (internal/kubekeys), which the
	// nodes read too; nil: only Token authenticates.
	Keys *tenant.Keys
	// MaxImageBytes bounds an image archive imported through the gateway,
	// the nodes' --max-image-size (0: their default, 32 GiB).
	MaxImageBytes int64
	// SpoolDir holds an imported archive while it is copied to the nodes
	// ("": the system's temporary directory).
	SpoolDir string
	Version  string
	Log      *slog.Logger
}

// Server is the gateway's HTTP handler.
type Server struct {
	opts  Options
	log   *slog.Logger
	place *placer
	fwd   *forwarder
	mux   *http.ServeMux
	// imageJobs bounds imports and pulls in flight (imageJob).
	imageJobs *inflight.Limiter
}

// RetryAfter is what NODE_UNAVAILABLE and CAPACITY_EXCEEDED answers ask a
// client to wait.
const RetryAfter = 5 * time.Second

// New returns a gateway.
func New(opts Options) *Server {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Log, place: newPlacer(opts.Directory), mux: http.NewServeMux(),
		imageJobs: inflight.New(api.MaxImageJobsPerTenant, api.MaxImageJobs)}
	s.fwd = newForwarder(s)
	auth := s.authenticated
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /v1/health", auth(s.health))
	s.mux.HandleFunc("GET /v1/sandboxes", auth(s.listSandboxes))
	s.mux.HandleFunc("PUT /v1/sandboxes/{id}", auth(s.ensureSandbox))
	s.mux.HandleFunc("GET /v1/sandboxes/{id}", auth(s.existing))
	s.mux.HandleFunc("PATCH /v1/sandboxes/{id}", auth(s.existing))
	s.mux.HandleFunc("DELETE /v1/sandboxes/{id}", auth(s.destroySandbox))
	s.mux.HandleFunc("/v1/sandboxes/{id}", auth(s.noRoute))
	s.mux.HandleFunc("/v1/sandboxes/{id}/{rest...}", auth(s.sandboxCall))
	s.mux.HandleFunc("GET /v1/nodes", auth(adminOnly(s.listNodes)))
	s.mux.HandleFunc("POST /v1/nodes/{name}/drain", auth(adminOnly(s.drainNode)))
	s.mux.HandleFunc("POST /v1/nodes/{name}/uncordon", auth(adminOnly(s.uncordonNode)))
	s.mux.HandleFunc("GET /v1/events", auth(s.events))
	s.keyRoutes()
	s.imageRoutes()
	return s
}

// Follow keeps the gateway's view of placements current through the
// directory's watch, when it has one (PlacementFollower), until ctx
// ends; without it placements are cached for 5 s.
func (s *Server) Follow(ctx context.Context) error {
	f, ok := s.opts.Directory.(PlacementFollower)
	if !ok {
		<-ctx.Done()
		return nil
	}
	return s.place.follow(ctx, f)
}

// ServeHTTP serves preview hosts by their sandbox's node and everything
// else by route; it answers unknown routes with JSON errors.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			writeError(w, api.Errorf(api.CodeInternal, "internal error; see the gateway's log"))
		}
	}()
	if s.servePreviewHost(w, r) {
		return
	}
	if !cleanPath(r.URL.Path) {
		writeError(w, api.Errorf(api.CodeNotFound, "no route %s %s: the path has empty, '.' or '..' segments", r.Method, r.URL.Path))
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// noRoute tells "no such route" from "route exists, wrong method".
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/v1/sandboxes/{id}" {
			writeError(w, api.Errorf(api.CodeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
	}
	writeError(w, api.Errorf(api.CodeNotFound, "no route %s %s on a cluster's gateway (docs/cluster.md lists what it serves)", r.Method, r.URL.Path))
}

// cleanPath reports whether p is absolute without empty, "." or ".."
// segments (the mux would redirect those).
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c == p
}

// authenticated requires the cluster's token or an API key of the
// cluster (Options.Keys), as a bearer token or, on a WebSocket, as the
// sandboxd.token.<token> subprotocol browsers use, and puts the caller
// in the request's context (tenants.go). The credentials are forwarded
// unchanged: the node checks them again against the same keys.
func (s *Server) authenticated(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.authenticate(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxd"`)
			writeError(w, api.Errorf(api.CodeUnauthorized, "missing or invalid bearer token: send \"Authorization: Bearer <token>\" (the cluster's token or an API key)"))
			return
		}
		if e := tenant.ActAs(&c, r.Header.Get(api.TenantHeader)); e != nil {
			writeError(w, e)
			return
		}
		next(w, r.WithContext(tenant.WithCaller(r.Context(), c)))
	}
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(cred), true
}

func tokenFromSubprotocol(r *http.Request) (string, bool) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if tok, ok := strings.CutPrefix(strings.TrimSpace(p), api.TokenSubprotocolPrefix); ok {
				return tok, true
			}
		}
	}
	return "", false
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("ok\n"))
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", Version: s.opts.Version})
}

// sandboxID returns the validated {id} of the route scoped to the
// caller's tenant ("team-a/demo": what placements are keyed by), or
// answers the error.
func sandboxID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := api.ValidateSandboxID(id); err != nil {
		var e *api.Error
		if !errors.As(err, &e) {
			e = api.Errorf(api.CodeInvalidSandboxID, "%v", err)
		}
		writeError(w, e)
		return "", false
	}
	return tenant.ScopeContext(r.Context(), id), true
}

// writeFailure answers err, classified once here.
func (s *Server) writeFailure(w http.ResponseWriter, r *http.Request, err error) {
	var e *api.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, ErrNotPlaced):
		e = api.Errorf(api.CodeSandboxNotFound, "sandbox %s not found", r.PathValue("id"))
	case errors.Is(err, ErrNodeNotFound):
		e = api.Errorf(api.CodeNodeNotFound, "%v", err)
	case errors.Is(err, ErrUnavailable):
		s.log.WarnContext(r.Context(), "cluster state unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		e = api.Errorf(api.CodeClusterUnavailable, "the cluster's state (the Kubernetes API) cannot be reached now; retry later")
	case errors.Is(err, errNoMatch):
		e = api.Errorf(api.CodeNoMatchingNode, "no node of the cluster has every label of the nodeSelector (GET /v1/nodes lists nodes' labels)")
	case errors.Is(err, inflight.ErrTenantBusy):
		e = api.Errorf(api.CodeTooManyImageJobs, "%v", err)
	case errors.Is(err, inflight.ErrBusy):
		s.log.WarnContext(r.Context(), "image calls refused", "method", r.Method, "path", r.URL.Path, "err", err)
		e = api.Errorf(api.CodeImageJobsBusy, "%v", err)
	case errors.Is(err, errNoFit):
		e = api.Errorf(api.CodeCapacityExceeded, "no node of the cluster can run another sandbox now: every node is full, cordoned or unavailable")
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		panic(http.ErrAbortHandler)
	default:
		s.log.ErrorContext(r.Context(), "gateway call failed", "method", r.Method, "path", r.URL.Path, "err", err)
		e = api.Errorf(api.CodeInternal, "internal error; see the gateway's log")
	}
	writeError(w, e)
}

func writeError(w http.ResponseWriter, e *api.Error) {
	switch e.Code {
	case api.CodeNodeUnavailable, api.CodeCapacityExceeded, api.CodeClusterUnavailable, api.CodeTooManyImageJobs, api.CodeImageJobsBusy:
		w.Header().Set("Retry-After", strconv.Itoa(int(RetryAfter.Seconds())))
	}
	writeJSON(w, e.Code.HTTPStatus(), e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
