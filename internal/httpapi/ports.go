package httpapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/proxy"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// PreviewConfig says how preview URLs look.
type PreviewConfig struct {
	// Domain: preview hosts are {port}-{sandboxId}-{token}.{Domain}.
	Domain string
	// Scheme of preview URLs: http or https.
	Scheme string
	// Port is the port in preview URLs; 0 (or the scheme's default) leaves
	// it out.
	Port int
}

// portRoutes are the routes of exposed ports, signed links, wsConnect and
// the authenticated port proxy.
func (s *Server) portRoutes() []route {
	routes := []route{
		{pattern: "POST /v1/sandboxes/{id}/ports", handler: s.exposePort},
		{pattern: "GET /v1/sandboxes/{id}/ports", handler: s.listPorts},
		{pattern: "DELETE /v1/sandboxes/{id}/ports/{port}", handler: s.unexposePort},
		{pattern: "POST /v1/sandboxes/{id}/ports/{port}/links", handler: s.createPreviewLink},
		{pattern: "GET /v1/sandboxes/{id}/ports/{port}/ws/{path...}", handler: s.wsConnect},
	}
	for _, m := range proxyMethods {
		routes = append(routes, route{pattern: m + " /v1/sandboxes/{id}/ports/{port}/proxy/{path...}", handler: s.portProxy})
	}
	return routes
}

// proxyMethods are the methods of the authenticated port proxy (GET also
// serves HEAD).
var proxyMethods = []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// sandboxGeneration returns the creation time of sandbox id, creating (and
// starting) the sandbox if it does not exist, like every call below
// /v1/sandboxes/{id}/. An existing sandbox is not woken up: its ports are
// bookkeeping.
func (s *Server) sandboxGeneration(ctx context.Context, id string) (time.Time, error) {
	inf, err := s.opts.Manager.Get(ctx, id)
	if errors.Is(err, sandbox.ErrNotFound) {
		lease, err := s.opts.Manager.Acquire(ctx, id)
		if err != nil {
			return time.Time{}, err
		}
		lease.Release()
		return lease.CreatedAt, nil
	}
	return inf.CreatedAt, err
}

// portParam returns the validated {port} of the route. Routes that expose
// or name exposed ports want 1024-65535 and no reserved port; the proxy
// routes take any port.
func (s *Server) portParam(w http.ResponseWriter, r *http.Request, exposable bool) (int, bool) {
	port, ok := proxy.ParsePort(r.PathValue("port"))
	if !ok {
		writeAPIError(w, api.Errorf(api.CodeInvalidPort, "port %q: want a number from 1 to 65535", r.PathValue("port")))
		return 0, false
	}
	if exposable {
		if err := s.opts.Ports.CheckPort(port); err != nil {
			s.writeError(w, r, portError(err))
			return 0, false
		}
	}
	return port, true
}

func (s *Server) exposePort(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var req api.ExposePortRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	if err := s.opts.Ports.CheckPort(req.Port); err != nil {
		s.writeError(w, r, portError(err))
		return
	}
	gen, err := s.sandboxGeneration(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	public := req.Public == nil || *req.Public
	p, created, err := s.opts.Ports.Expose(r.Context(), id, gen, req.Port, proxy.ExposeOptions{Name: req.Name, Token: req.Token, Public: public})
	if err != nil {
		s.writeError(w, r, portError(err))
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.log.Info("port exposed", "sandbox", id, "port", p.Port, "public", p.Public)
	}
	writeJSON(w, status, s.exposedPort(p))
}

func (s *Server) listPorts(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	gen, err := s.sandboxGeneration(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.ExposedPortList{Ports: []api.ExposedPort{}}
	for _, p := range s.opts.Ports.List(id, gen) {
		out.Ports = append(out.Ports, s.exposedPort(p))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) unexposePort(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	port, ok := s.portParam(w, r, true)
	if !ok {
		return
	}
	if _, err := s.sandboxGeneration(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.opts.Ports.Unexpose(r.Context(), id, port); err != nil {
		s.writeError(w, r, err)
		return
	}
	// Joined connections were authorised by the address that is gone.
	s.opts.Proxy.DropJoined(id, port)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) createPreviewLink(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	port, ok := s.portParam(w, r, true)
	if !ok {
		return
	}
	var req api.PreviewLinkRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, true); e != nil {
		writeAPIError(w, e)
		return
	}
	life := time.Duration(req.ExpiresIn) * time.Millisecond
	if req.ExpiresIn == 0 {
		life = api.DefaultLinkExpiry
	}
	if life <= 0 || life > api.MaxLinkExpiry {
		writeAPIError(w, api.Errorf(api.CodeValidationFailed, "expiresIn: want 1 to %d milliseconds", api.MaxLinkExpiry.Milliseconds()))
		return
	}
	gen, err := s.sandboxGeneration(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	p, ok := s.opts.Ports.Get(id, port)
	if !ok || s.opts.Ports.Stale(p, gen) {
		writeAPIError(w, api.Errorf(api.CodePortNotExposed, "port %d of %s is not exposed", port, id))
		return
	}
	expires := time.Now().Add(life).Truncate(time.Second)
	link := s.previewURL(p) + "?" + proxy.LinkParam + "=" + url.QueryEscape(s.opts.Signer.Sign(p.Address(), expires))
	writeJSON(w, http.StatusCreated, api.PreviewLink{URL: link, ExpiresAt: expires.UTC()})
}

func (s *Server) exposedPort(p proxy.Port) api.ExposedPort {
	return api.ExposedPort{Port: p.Port, Name: p.Name, Public: p.Public, URL: s.previewURL(p), Token: p.Token, CreatedAt: p.CreatedAt}
}

// previewURL is the preview URL of p.
func (s *Server) previewURL(p proxy.Port) string {
	pc := s.opts.Preview
	host := p.Address().Host(pc.Domain)
	if pc.Port != 0 && !(pc.Scheme == "http" && pc.Port == 80) && !(pc.Scheme == "https" && pc.Port == 443) {
		host += ":" + strconv.Itoa(pc.Port)
	}
	return pc.Scheme + "://" + host + "/"
}

// servePreviewHost serves r if its Host is below the preview domain, and
// reports whether it did. Every name below the preview domain belongs to
// previews: one that is not a valid preview host gets PREVIEW_NOT_FOUND,
// never the API or the console, which must not share a site with the
// pages sandboxes serve.
func (s *Server) servePreviewHost(w http.ResponseWriter, r *http.Request) bool {
	if s.opts.Ports == nil {
		return false
	}
	if s.opts.E2B != nil && proxy.InDomain(r.Host, s.opts.Preview.Domain) && s.opts.E2B.ServeHost(w, r) {
		return true
	}
	a, ok := proxy.ParseHost(r.Host, s.opts.Preview.Domain)
	if !ok {
		if !proxy.InDomain(r.Host, s.opts.Preview.Domain) {
			return false
		}
		writeAPIError(w, errNoPreview())
		return true
	}
	s.servePreview(w, r, a)
	return true
}

// PreviewHandler serves preview traffic only, for a listener of its own:
// requests to other hosts get PREVIEW_NOT_FOUND.
func (s *Server) PreviewHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic serving preview request", "host", r.Host, "panic", p, "stack", string(debug.Stack()))
				writeAPIError(w, &api.Error{Code: api.CodeInternal, Message: "internal error; see the daemon's log"})
			}
		}()
		if !s.servePreviewHost(w, r) {
			writeAPIError(w, errNoPreview())
		}
	})
}

// portError gives the errors of package proxy their codes; others pass
// through to classify.
func portError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, proxy.ErrInvalidPort):
		return &api.Error{Code: api.CodeInvalidPort, Message: msg}
	case errors.Is(err, proxy.ErrInvalid):
		return &api.Error{Code: api.CodeValidationFailed, Message: msg}
	case errors.Is(err, proxy.ErrAlreadyExposed):
		return &api.Error{Code: api.CodePortAlreadyExposed, Message: msg}
	case errors.Is(err, proxy.ErrLimit):
		return &api.Error{Code: api.CodeResourceExhausted, Message: msg}
	case errors.Is(err, proxy.ErrSandboxNotFound):
		return &api.Error{Code: api.CodeSandboxNotFound, Message: "sandbox not found"}
	case errors.Is(err, proxy.ErrNotFound):
		return errNoPreview()
	}
	return err
}

func errNoPreview() *api.Error {
	return api.Errorf(api.CodePreviewNotFound, "no preview at this address")
}

// servePreview proxies one request to the port a preview address names.
// Unknown sandbox, unexposed port and wrong token get the same answer, and
// nothing wakes a sandbox before the token has been checked.
func (s *Server) servePreview(w http.ResponseWriter, r *http.Request, a proxy.Address) {
	p, err := s.opts.Ports.Lookup(a)
	if err != nil {
		writeAPIError(w, errNoPreview())
		return
	}
	// A key opens the private previews of its own tenant's sandboxes
	// only; any valid key is kept from the sandbox's service.
	caller, hasKey := s.bearerCaller(r)
	apiToken := hasKey && caller.Owns(p.SandboxID)
	if cred := r.URL.Query().Get(proxy.LinkParam); cred != "" {
		if expires, ok := s.opts.Signer.Verify(cred, p.Address(), time.Now()); ok {
			s.setPreviewCookie(w, r, cred, expires)
			return
		}
		if !p.Public && !apiToken {
			writeAPIError(w, api.Errorf(api.CodeUnauthorized, "this preview link has expired or is not valid; ask for a new one"))
			return
		}
	}
	if !p.Public && !apiToken && !s.hasPreviewCookie(r, p) {
		writeAPIError(w, api.Errorf(api.CodeUnauthorized,
			"this preview is private: open a signed link (POST /v1/sandboxes/{id}/ports/{port}/links) or send the API token"))
		return
	}
	release, ok := s.admitProxied(w, p.SandboxID)
	if !ok {
		return
	}
	defer release()
	lease, err := s.opts.Manager.AcquireExisting(r.Context(), p.SandboxID)
	if errors.Is(err, sandbox.ErrNotFound) {
		writeAPIError(w, errNoPreview())
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer lease.Release()
	if s.opts.Ports.Stale(p, lease.CreatedAt) {
		writeAPIError(w, errNoPreview())
		return
	}
	req := s.previewRequest(r, p, hasKey)
	if p.Public && !hasKey && len(r.CookiesNamed(proxy.CookieName)) == 0 && !viaProxy(r) {
		// A public preview's connection may be joined to the service's
		// (--preview-join): the kernel sends on later requests that need
		// nothing of the daemon, and keeps the others for Recheck.
		req.Hold = func() (func(), error) {
			l, err := s.opts.Manager.AcquireExisting(r.Context(), p.SandboxID)
			if err != nil {
				return nil, err
			}
			return l.Release, nil
		}
		req.Recheck = func(r *http.Request) (proxy.Request, bool) { return s.recheckJoined(r, a, p) }
	}
	s.opts.Proxy.Serve(w, r, req, s.proxyError(p.SandboxID, p.Port))
}

// recheckJoined is servePreview's decision for a later request r on a
// connection joined after a request to address a (port p): r may go to
// the same service only when it names the same public preview and holds
// no signed link; an API token or key in it is kept from the service.
func (s *Server) recheckJoined(r *http.Request, a proxy.Address, p proxy.Port) (proxy.Request, bool) {
	if b, ok := proxy.ParseHost(r.Host, s.opts.Preview.Domain); !ok || b != a || r.URL.Query().Has(proxy.LinkParam) {
		return proxy.Request{}, false
	}
	now, err := s.opts.Ports.Lookup(a)
	if err != nil || !now.Public || now.SandboxID != p.SandboxID || now.Port != p.Port {
		return proxy.Request{}, false
	}
	_, hasKey := s.bearerCaller(r)
	return s.previewRequest(r, p, hasKey), true
}

// previewRequest is where a preview request r to port p goes; hasKey: it
// holds an API token or key, which is kept from the service.
func (s *Server) previewRequest(r *http.Request, p proxy.Port, hasKey bool) proxy.Request {
	return proxy.Request{SandboxID: p.SandboxID, Port: p.Port, Host: r.Host, Scheme: s.opts.Preview.Scheme, StripAuthorization: hasKey}
}

// viaProxy reports whether r says it came through a proxy (a cluster's
// gateway, nginx): a proxy may send requests for several preview hosts
// over one connection, which a joined connection would all hand to the
// first one's service.
func viaProxy(r *http.Request) bool {
	for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "Forwarded", "Via"} {
		if _, ok := r.Header[h]; ok {
			return true
		}
	}
	return false
}

// setPreviewCookie answers a signed link: it stores the credential in a
// cookie scoped to this preview host (no Domain attribute) and redirects
// to the same address without the credential, so that it neither stays
// in the address bar nor reaches the service.
func (s *Server) setPreviewCookie(w http.ResponseWriter, r *http.Request, cred string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{
		Name: proxy.CookieName, Value: cred, Path: "/", Expires: expires,
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.opts.Preview.Scheme == "https",
	})
	q := r.URL.Query()
	q.Del(proxy.LinkParam)
	target := r.URL.EscapedPath()
	if enc := q.Encode(); enc != "" {
		target += "?" + enc
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, target, http.StatusSeeOther)
}

func (s *Server) hasPreviewCookie(r *http.Request, p proxy.Port) bool {
	now := time.Now()
	for _, c := range r.CookiesNamed(proxy.CookieName) {
		if _, ok := s.opts.Signer.Verify(c.Value, p.Address(), now); ok {
			return true
		}
	}
	return false
}

// hasAPIToken reports whether r carries the API token as a bearer token.
func (s *Server) hasAPIToken(r *http.Request) bool {
	got, ok := bearerToken(r)
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.opts.Token)) == 1
}

// admitProxied takes an in-flight slot of the proxy for a request to
// sandbox id, or answers 503 PREVIEW_BUSY and reports false.
func (s *Server) admitProxied(w http.ResponseWriter, id string) (func(), bool) {
	release, err := s.opts.Proxy.Admit(id)
	if err != nil {
		s.countError(api.CodePreviewBusy)
		w.Header().Set("Retry-After", "1")
		writeAPIError(w, api.Errorf(api.CodePreviewBusy,
			"too many requests to this sandbox's services are in flight (at most %d per sandbox, %d in all); retry shortly",
			s.opts.Proxy.Limits().MaxInFlightPerSandbox, s.opts.Proxy.Limits().MaxInFlight))
		return nil, false
	}
	return release, true
}

// proxyError answers a request the proxy could not complete.
func (s *Server) proxyError(id string, port int) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		var dialErr *proxy.DialError
		var netErr net.Error
		switch {
		case errors.Is(err, sandbox.ErrNotFound), errors.Is(err, sandbox.ErrFailed), errors.Is(err, sandbox.ErrUnavailable),
			errors.Is(err, sandbox.ErrCapacity), errors.Is(err, sandbox.ErrImageNotFound):
			s.writeError(w, r, err)
		case errors.As(err, &dialErr):
			s.log.Debug("service not responding", "sandbox", id, "port", port, "err", err)
			writeAPIError(w, api.Errorf(api.CodeServiceNotResponding,
				"nothing in the sandbox answered on port %d; is the service listening (on 0.0.0.0 or 127.0.0.1)?", port))
		case errors.As(err, &netErr) && netErr.Timeout():
			s.log.Debug("service too slow", "sandbox", id, "port", port, "err", err)
			writeAPIError(w, api.Errorf(api.CodeServiceNotResponding,
				"the service on port %d sent no response headers within %s", port, s.opts.Proxy.Limits().HeaderTimeout))
		default:
			// Go's transport has no typed error for headers over its limit.
			s.log.Debug("service answered badly", "sandbox", id, "port", port, "err", err)
			writeAPIError(w, api.Errorf(api.CodeServiceNotResponding,
				"the service on port %d broke the connection or sent an invalid response (response headers are limited to %d bytes)",
				port, s.opts.Proxy.Limits().MaxHeaderBytes))
		}
	}
}

// wsConnect bridges a client's WebSocket to a WebSocket server on a port
// of the sandbox (the port need not be exposed: the caller has the API
// token). The path after /ws is the server's path.
func (s *Server) wsConnect(w http.ResponseWriter, r *http.Request) {
	if !isWebSocketUpgrade(r) {
		writeAPIError(w, api.Errorf(api.CodeValidationFailed, "wsConnect needs a WebSocket upgrade request"))
		return
	}
	s.portProxy(w, r)
}

// portProxy forwards any request, upgrades included, to a port of the
// sandbox, for a front-end server that authenticated its own users (the
// SDK's PreviewHandler and WSConnect). With the preview token header, the
// port must be exposed with that token, as for a preview URL.
func (s *Server) portProxy(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	port, ok := s.portParam(w, r, false)
	if !ok {
		return
	}
	var exposed *proxy.Port
	if tok := r.Header.Get(api.PreviewTokenHeader); tok != "" {
		p, err := s.opts.Ports.LookupOf(id, port, tok)
		if err != nil {
			writeAPIError(w, errNoPreview())
			return
		}
		exposed = &p
		r.Header.Del(api.PreviewTokenHeader)
	}
	release, ok := s.admitProxied(w, id)
	if !ok {
		return
	}
	defer release()
	lease, err := s.opts.Manager.Acquire(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer lease.Release()
	if exposed != nil && s.opts.Ports.Stale(*exposed, lease.CreatedAt) {
		writeAPIError(w, errNoPreview())
		return
	}
	stripTokenSubprotocol(r.Header)
	host := r.Header.Get("X-Forwarded-Host")
	if host == "" {
		host = "localhost:" + strconv.Itoa(port)
	}
	s.opts.Proxy.Serve(w, r, proxy.Request{
		SandboxID: id, Port: port, Path: "/" + r.PathValue("path"), Host: host, Scheme: "http",
		TrustForwarded: true, StripAuthorization: true,
	}, s.proxyError(id, port))
}

func isWebSocketUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// tokenFromSubprotocol returns the API token a WebSocket client offered as
// the subprotocol "sandboxd.token.<token>" (browsers cannot set headers on
// WebSockets).
func tokenFromSubprotocol(r *http.Request) (string, bool) {
	if !isWebSocketUpgrade(r) {
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

// stripTokenSubprotocol removes the token subprotocol from h, so that it
// never reaches a sandbox.
func stripTokenSubprotocol(h http.Header) {
	values := h.Values("Sec-WebSocket-Protocol")
	if len(values) == 0 {
		return
	}
	var kept []string
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if p != "" && !strings.HasPrefix(p, api.TokenSubprotocolPrefix) {
				kept = append(kept, p)
			}
		}
	}
	h.Del("Sec-WebSocket-Protocol")
	if len(kept) > 0 {
		h.Set("Sec-WebSocket-Protocol", strings.Join(kept, ", "))
	}
}
