package httpapi

import (
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/inflight"
	"github.com/sandboxd/sandboxd/internal/metrics"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/secret"
	"github.com/sandboxd/sandboxd/internal/tenant"
	"github.com/sandboxd/sandboxd/internal/volume"
)

// Options configure the API server.
type Options struct {
	Manager *sandbox.Manager
	// Images is the image store; nil: no image routes answer.
	Images *image.Store
	// Token is the bearer token every /v1 call must carry.
	Token   string
	Version string
	// Runtime is the default runtime; Runtimes those available.
	Runtime  string
	Runtimes []string
	Log      *slog.Logger
	// Metrics receives the API's metrics and is served at /metrics.
	Metrics *metrics.Registry
	// Ports, Proxy and Signer serve exposed ports and preview URLs
	// (ports.go); Preview says what preview URLs look like.
	Ports   *proxy.Registry
	Proxy   *proxy.Proxy
	Signer  *proxy.Signer
	Preview PreviewConfig
	// BodyTimeout bounds the time to read a body the daemon reads whole
	// (JSON routes, forwarded JSON calls); 0: DefaultBodyTimeout.
	// Streamed bodies are not bounded.
	BodyTimeout time.Duration
	// Console serves the web console at / (nil: none).
	Console http.Handler
	// Keys are the API keys of tenants (nil: only Token authenticates).
	Keys *tenant.Keys
	// MCP serves the Model Context Protocol at /mcp, behind the token
	// (nil: /mcp is not found).
	MCP http.Handler
	// Secrets are the daemon's named secrets (storage.go); nil: none.
	Secrets *secret.Store
	// Egress reports what sandboxes' egress policies refused (nil: nothing).
	Egress EgressReporter
	// Volumes are the daemon's named volumes (storage.go); nil: none.
	Volumes *volume.Store
	// E2B serves E2B's protocols below /e2b (it checks its own keys) and
	// E2B's host names below the preview domain (nil: neither).
	E2B E2BHandler
}

// E2BHandler is the E2B compatibility layer (package e2b) as the API
// server mounts it.
type E2BHandler interface {
	// ServeHTTP serves a request whose path is /e2b or below.
	http.Handler
	// ServeHost serves a request to an E2B host name below the preview
	// domain (<port>-<id>), reporting whether the host was one.
	ServeHost(w http.ResponseWriter, r *http.Request) bool
}

// Server serves the public API.
type Server struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	m    apiMetrics
	// imageJobs bounds imports, pulls and builds in flight (imageJob).
	imageJobs *inflight.Limiter
}

// New returns the API server.
func New(opts Options) *Server {
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewRegistry()
	}
	s := &Server{opts: opts, log: opts.Log, mux: http.NewServeMux(),
		imageJobs: inflight.New(api.MaxImageJobsPerTenant, api.MaxImageJobs)}
	s.m = registerMetrics(opts.Metrics)
	s.routes()
	return s
}

// route is one entry of the routing table; the OpenAPI test walks it.
type route struct {
	pattern string
	handler http.HandlerFunc
	// public routes need no token.
	public bool
}

func (s *Server) table() []route {
	return append([]route{
		{pattern: "GET /healthz", handler: s.healthz, public: true},
		{pattern: "GET /v1/openapi.json", handler: s.openAPI, public: true},
		{pattern: "GET /v1/health", handler: s.health},
		{pattern: "GET /v1/sandboxes", handler: s.listSandboxes},
		{pattern: "PUT /v1/sandboxes/{id}", handler: s.ensureSandbox},
		{pattern: "GET /v1/sandboxes/{id}", handler: s.getSandbox},
		{pattern: "DELETE /v1/sandboxes/{id}", handler: s.destroySandbox},
		{pattern: "PATCH /v1/sandboxes/{id}", handler: s.updateSandbox},
		{pattern: "POST /v1/sandboxes/{id}/stop", handler: s.lifecycleAction(s.opts.Manager.Stop)},
		{pattern: "POST /v1/sandboxes/{id}/start", handler: s.lifecycleAction(s.opts.Manager.Start)},
		{pattern: "POST /v1/sandboxes/{id}/restart", handler: s.lifecycleAction(s.opts.Manager.Restart)},
		{pattern: "POST /v1/sandboxes/{id}/renew", handler: s.lifecycleAction(s.opts.Manager.Renew)},
		{pattern: "POST /v1/sandboxes/{id}/pause", handler: s.pauseSandbox},
		{pattern: "POST /v1/sandboxes/{id}/resume", handler: s.lifecycleAction(s.opts.Manager.Start)},
		// Snapshots (snapshots.go).
		{pattern: "POST /v1/sandboxes/{id}/snapshots", handler: s.createSnapshot},
		{pattern: "GET /v1/snapshots", handler: s.listSnapshots},
		{pattern: "GET /v1/snapshots/{name}", handler: s.inspectSnapshot},
		{pattern: "DELETE /v1/snapshots/{name}", handler: s.removeSnapshot},
		{pattern: "GET /v1/sandboxes/{id}/network", handler: s.getNetwork},
		{pattern: "PUT /v1/sandboxes/{id}/network", handler: s.setNetwork},
		{pattern: "GET /v1/events", handler: s.events},
		{pattern: "GET /metrics", handler: s.metricsPage},
		// Images (images.go); {name...} takes the rest: names have '/' and ':'.
		{pattern: "GET /v1/images", handler: s.listImages},
		{pattern: "POST /v1/images/import", handler: s.imageJob(s.importImage)},
		{pattern: "POST /v1/images/pull", handler: s.imageJob(s.pullImage)},
		{pattern: "POST /v1/images/build", handler: s.imageJob(s.buildImage)},
		// The base image is shared by every tenant: admins build it.
		{pattern: "POST /v1/images/build-base", handler: s.adminOnly(s.imageJob(s.buildBaseImage))},
		{pattern: "GET /v1/images/{name...}", handler: s.inspectImage},
		{pattern: "DELETE /v1/images/{name...}", handler: s.removeImage},
		// The Model Context Protocol (docs/mcp.md), streamable HTTP.
		// Its tools call the daemon with the admin token, so only admins
		// may use it.
		{pattern: "POST /mcp", handler: s.adminOnly(s.mcp)},
		{pattern: "GET /mcp", handler: s.adminOnly(s.mcp)},
		{pattern: "DELETE /mcp", handler: s.adminOnly(s.mcp)},
		// API keys (keys.go), admins only.
		{pattern: "POST /v1/keys", handler: s.adminOnly(s.createKey)},
		{pattern: "GET /v1/keys", handler: s.adminOnly(s.listKeys)},
		{pattern: "DELETE /v1/keys/{name}", handler: s.adminOnly(s.removeKey)},
		{pattern: "POST /v1/keys/{name}/rotate", handler: s.adminOnly(s.rotateKey)},
		// Everything else below a sandbox is served by its agent.
		{pattern: "/v1/sandboxes/{id}/{rest...}", handler: s.forward},
	}, append(append(s.portRoutes(), s.storageRoutes()...), s.backupRoutes()...)...)
}

func (s *Server) routes() {
	for _, rt := range s.table() {
		h := rt.handler
		if !rt.public {
			h = s.authenticated(h)
		}
		s.mux.HandleFunc(rt.pattern, h)
	}
	// Without this, other methods on a sandbox's own path would match the
	// forwarding route's "/v1/sandboxes/{id}/" and the mux would answer
	// with a redirect there: a POST must get 405, never a 307.
	s.mux.HandleFunc("/v1/sandboxes/{id}", s.authenticated(s.noRoute))
	// What no route matches is answered by noRoute, never by the mux's
	// plain text: so ServeHTTP need not look the route up first, and the
	// mux matches each request's path once (each match allocates).
	s.mux.HandleFunc(anyPath, s.noRoute)
}

// anyPath is the pattern of noRoute: every path no route matches.
const anyPath = "/"

// ServeHTTP recovers from panics, answers unknown routes and methods with
// JSON errors and logs every request at debug level.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			writeAPIError(w, &api.Error{Code: api.CodeInternal, Message: "internal error; see the daemon's log"})
		}
		s.log.DebugContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "took", time.Since(start))
	}()
	if s.servePreviewHost(w, r) || s.serveConsole(w, r) {
		return
	}
	// /files: the E2B SDK's signed file URLs drop the /e2b prefix.
	if s.opts.E2B != nil && (r.URL.Path == "/e2b" || strings.HasPrefix(r.URL.Path, "/e2b/") || r.URL.Path == "/files") {
		s.opts.E2B.ServeHTTP(w, r)
		return
	}
	if !cleanPath(r.URL.Path) {
		// The mux would redirect to the cleaned path (307 for a POST),
		// which a client may follow to a route it did not name.
		writeAPIError(w, api.Errorf(api.CodeNotFound, "no route %s %s: the path has empty, '.' or '..' segments", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// cleanPath reports whether p is in the form the mux matches without a
// redirect: absolute, no empty, "." or ".." segments (a trailing slash is
// kept).
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

// noRoute tells "no such route" from "route exists, wrong method". The
// mux answers both with plain text; the API answers with codes.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != anyPath {
			writeAPIError(w, api.Errorf(api.CodeMethodNotAllowed, "%s is not allowed on %s", r.Method, r.URL.Path))
			return
		}
	}
	writeAPIError(w, api.Errorf(api.CodeNotFound, "no route %s %s", r.Method, r.URL.Path))
}

// authenticated requires the bearer token or an API key, and puts the
// caller in the request's context (tenants.go).
func (s *Server) authenticated(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := s.authenticate(r)
		if !ok {
			writeAPIError(w, api.Errorf(api.CodeUnauthorized,
				"missing or invalid bearer token: send \"Authorization: Bearer <token>\" (the local token is in <state-dir>/token)"))
			return
		}
		if e := tenant.ActAs(&c, r.Header.Get(api.TenantHeader)); e != nil {
			writeAPIError(w, e)
			return
		}
		next(w, r.WithContext(tenant.WithCaller(r.Context(), c)))
	}
}

// bearerToken returns the credentials of r's "Authorization: Bearer"
// header. The scheme is case-insensitive (RFC 9110, 11.1): "bearer" and
// "BEARER" are the same scheme.
func bearerToken(r *http.Request) (string, bool) {
	scheme, cred, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(cred), true
}

// mcp hands /mcp to the MCP server once the token has been checked.
func (s *Server) mcp(w http.ResponseWriter, r *http.Request) {
	if s.opts.MCP == nil {
		writeAPIError(w, api.Errorf(api.CodeNotFound, "this daemon serves no MCP endpoint"))
		return
	}
	s.opts.MCP.ServeHTTP(w, r)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte("ok\n"))
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", Version: s.opts.Version, Runtime: s.opts.Runtime, Runtimes: s.opts.Runtimes})
}

// sandboxID returns the validated {id} of the route scoped to the
// caller's tenant (tenants.go), or answers the error. Every route that
// names a sandbox takes its ID from here, and so only ever reaches the
// caller's own sandboxes.
func sandboxID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := api.ValidateSandboxID(id); err != nil {
		writeAPIError(w, err.(*api.Error))
		return "", false
	}
	return scopeName(r, id), true
}
