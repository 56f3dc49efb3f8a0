// Package e2b serves E2B's protocols, so that the official E2B SDKs (npm
// and PyPI "e2b"), unchanged, drive sandboxd: the control plane (REST,
// JSON, X-API-KEY) and the in-sandbox daemon envd (Connect-RPC with the
// JSON codec, /files, /health) under one prefix of the main listener,
// envd calls routed by their E2b-Sandbox-Id header, and the host-routed
// forms (49983-<id>.<domain>, <port>-<id>.<domain>) through the preview
// listener. See docs/e2b.md.
//
// It owns the translation only: every sandbox operation is a call of the
// daemon's own public API (/v1) through an in-memory connection to the
// daemon's server, so token checks, leases and the agent's code paths are
// the same as for any other client. It must never reach into the manager
// or the agent beside that API. What it keeps itself is E2B's lifecycle
// (deadlines, pause) and the bookkeeping E2B needs that sandboxd has not
// (process configurations for List), see table.go.
package e2b

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

// Prefix is where the E2B surface is served on the main listener.
const Prefix = "/e2b"

// EnvdPort is the port E2B's SDK names envd by in host-routed URLs.
const EnvdPort = 49983

// envdVersion is the envd version the layer reports: the SDK gates
// features on it, and 0.5.7 enables every feature served here (stdin
// flag, default user, closeStdin, octet-stream uploads) while making the
// SDK refuse, with its own clean errors, the newer ones that are not
// (file metadata 0.6.2, watch entries 0.6.3).
const envdVersion = "0.5.7"

// Options configure the E2B surface.
type Options struct {
	// Transport reaches the daemon's own API (its in-memory listener).
	Transport http.RoundTripper
	// BaseURL is the daemon's API base URL as Transport reaches it.
	BaseURL string
	// Token is the admin token: an E2B API key (the admin namespace's),
	// and the daemon API's.
	Token string
	// Keys authenticate tenants' API keys, E2B API keys of their tenants
	// (nil: only Token).
	Keys KeyAuth
	// StateDir keeps the layer's table and key.
	StateDir string
	// Domain is what sandboxes' host-routed names end in: the preview
	// domain, with ":port" when previews are not on the scheme's port.
	// It is the create answer's domain.
	Domain string
	// PreviewDomain is the preview domain alone (for parsing Host).
	PreviewDomain string
	Log           *slog.Logger
	// BodyTimeout bounds the time to read a request body the layer reads
	// whole (control plane JSON, RPC messages); 0: httpserve.DefaultBodyTimeout.
	BodyTimeout time.Duration
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Server serves the E2B surface.
type Server struct {
	opts  Options
	up    *upstream
	sdk   *client.Client
	table *table
	log   *slog.Logger
	now   func() time.Time

	// procs remembers, per sandbox, what E2B asked each process to run.
	procs *processBook
	// users caches per sandbox the sessions made for E2B users.
	usersMu sync.Mutex
	users   map[string]bool
	// pty bridges E2B PTYs onto sandboxd terminals.
	ptys *ptyBook
	// watchers are the polled watchers (CreateWatcher).
	watchers *watcherBook
	// names caches user and group names per sandbox.
	names *nameCache

	// lastCPU is each sandbox's previous CPU sample, for getMetrics.
	metricsMu sync.Mutex
	lastCPU   map[string]cpuSample

	// retryAt is, for sandboxes whose end at the timeout failed, when to
	// try again (owned by Run's goroutine).
	retryAt map[string]time.Time

	// bg counts the background warm-ups of new sandboxes (bounded in
	// time); Run waits for them when it returns.
	bg sync.WaitGroup
}

// New returns the E2B server.
func New(opts Options) (*Server, error) {
	t, err := openTable(opts.StateDir)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	hc := &http.Client{Transport: tenantTransport{opts.Transport}}
	sdk, err := client.New(opts.BaseURL, client.WithToken(opts.Token), client.WithHTTPClient(hc), client.WithUserAgent("sandboxd-e2b"))
	if err != nil {
		return nil, err
	}
	s := &Server{
		sdk:   sdk,
		opts:  opts,
		up:    &upstream{hc: hc, base: opts.BaseURL, token: opts.Token},
		table: t, log: opts.Log.With("component", "e2b"), now: now,
		procs: newProcessBook(), users: map[string]bool{}, ptys: newPTYBook(),
		watchers: newWatcherBook(), names: newNameCache(), lastCPU: map[string]cpuSample{}, retryAt: map[string]time.Time{},
	}
	return s, nil
}

// ServeHTTP serves a request whose path starts with Prefix.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, Prefix)
	if rest == "" {
		rest = "/"
	}
	if id := r.Header.Get("E2b-Sandbox-Id"); id != "" {
		s.serveEnvd(w, r, id, rest)
		return
	}
	if rest == "/files" {
		s.serveSignedFiles(w, r)
		return
	}
	s.serveControl(w, r, rest)
}

// PathFiles is the path of signed file URLs the SDK makes from
// sandboxUrl: it drops sandboxUrl's path, so they arrive at /files of
// the main listener, without the prefix and without E2b-Sandbox-Id.
const PathFiles = "/files"

// serveSignedFiles serves a signed /files URL that names no sandbox: the
// signature, made with one sandbox's access token, says which.
func (s *Server) serveSignedFiles(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	op := "read"
	if r.Method == http.MethodPost {
		op = "write"
	}
	for _, e := range s.table.list() {
		if s.checkSignature(q, op, e.ID) == nil {
			s.serveEnvd(w, r, e.ID, "/files")
			return
		}
	}
	writeControlJSON(w, http.StatusUnauthorized, controlErrorf(http.StatusUnauthorized, "/files needs a valid signature (uploadUrl, downloadUrl) or E2b-Sandbox-Id with X-Access-Token"))
}

// ServeHost serves the host-routed forms below the preview domain:
// 49983-<id> (envd) and <port>-<id> (a sandbox's port, getHost), for
// sandboxes created through this layer. It reports whether it did.
func (s *Server) ServeHost(w http.ResponseWriter, r *http.Request) bool {
	port, id, ok := parseHost(r.Host, s.opts.PreviewDomain)
	if !ok {
		return false
	}
	e, ok := s.table.get(id)
	if !ok {
		return false
	}
	r = r.WithContext(withTenant(r.Context(), e.Tenant))
	if port == EnvdPort {
		s.serveEnvd(w, r, id, r.URL.Path)
		return true
	}
	s.servePort(w, r, e, port)
	return true
}

// Run enforces deadlines until ctx ends: an expired sandbox is killed,
// or paused when created with autoPause. Once a second is well within
// E2B's own granularity (seconds).
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	defer s.bg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.expire(ctx)
		}
	}
}

func (s *Server) expire(ctx context.Context) {
	now := s.now()
	for _, e := range s.table.expired(now) {
		if t, ok := s.retryAt[e.ID]; ok && now.Before(t) {
			continue
		}
		var err error
		ctx := withTenant(ctx, e.Tenant)
		if e.AutoPause {
			err = s.pause(ctx, e.ID, !e.AutoPauseNoMemory)
		} else {
			err = s.kill(ctx, e.ID)
		}
		if err != nil {
			// Retried, but not every second: a sandbox that cannot be
			// ended now (its runtime failing) would flood the log.
			s.retryAt[e.ID] = now.Add(expireRetry)
			s.log.Warn("ending a sandbox at its E2B timeout", "sandbox", e.ID, "pause", e.AutoPause, "err", err, "retry_in", expireRetry)
			continue
		}
		delete(s.retryAt, e.ID)
		s.log.Info("sandbox reached its E2B timeout", "sandbox", e.ID, "paused", e.AutoPause)
	}
}

// expireRetry is how long a sandbox that could not be ended at its
// timeout waits before the next attempt.
const expireRetry = 30 * time.Second
