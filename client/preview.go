package client

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex"
)

// PreviewHandler serves preview URLs from your own HTTP server, like the
// reference SDK's proxyToSandbox, so that you can put sandboxd behind your
// own domain, TLS and authentication. Requests whose host is a preview
// host on domain, {port}-{sandboxId}-{token}.{domain}, are forwarded
// through the daemon's API to the sandbox's port: every method, streamed
// bodies, event streams and WebSocket upgrades. Everything else goes to
// next (nil: 404), so it can sit in front of your own routes:
//
//	http.ListenAndServe(":443", c.PreviewHandler("preview.example.com", myRoutes))
//
// The token must be the exposed port's (an unknown sandbox, port or token
// is 404 PREVIEW_NOT_FOUND, as at the daemon's own preview URLs). Private
// ports are served too: the handler authenticates to the daemon with the
// client's API token, so your server's own authentication decides who gets
// through. The API token never reaches the sandbox, and the X-Forwarded-*
// headers tell the service the original host, scheme and client.
func (c *Client) PreviewHandler(domain string, next http.Handler) http.Handler {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		port, id, token, ok := api.ParsePreviewHost(r.Host, domain)
		if !ok {
			if next == nil {
				writeLocalError(w, api.Errorf(api.CodePreviewNotFound, "no preview at this address"))
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		c.forwardToPort(w, r, id, port, "/proxy"+r.URL.Path, token)
	})
}

// WSConnect bridges r, a WebSocket upgrade request that your server
// received, to a WebSocket server listening on port in the sandbox, like
// the reference SDK's wsConnect. The service sees r's path and query. The
// port does not have to be exposed: the client's API token authorises the
// connection. WSConnect returns when the WebSocket closes; errors (the
// sandbox cannot be started, nothing listens: 502 SERVICE_NOT_RESPONDING)
// are answered to the client as JSON errors with their codes.
func (s *Sandbox) WSConnect(w http.ResponseWriter, r *http.Request, port int) {
	if err := validateID(s.id); err != nil {
		writeLocalError(w, &api.Error{Code: api.CodeInvalidSandboxID, Message: err.Error()})
		return
	}
	if port < 1 || port > 65535 {
		writeLocalError(w, api.Errorf(api.CodeInvalidPort, "port %d is outside 1-65535", port))
		return
	}
	if err := s.prepare(r.Context()); err != nil {
		writeLocalError(w, api.Errorf(api.CodeSandboxUnavailable, "preparing sandbox: %v", err))
		return
	}
	s.c.forwardToPort(w, r, s.id, port, "/ws"+r.URL.Path, "")
}

// forwardToPort sends r to the daemon's port proxy route of sandbox id,
// whose suffix (/proxy/... or /ws/...) is rest.
func (c *Client) forwardToPort(w http.ResponseWriter, r *http.Request, id string, port int, rest, token string) {
	target := *c.base
	prefix := sandboxPath(id, "/ports/"+strconv.Itoa(port))
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&target)
			pr.Out.URL.Path = target.Path + prefix + rest
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Host = target.Host
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
			if c.token != "" {
				pr.Out.Header.Set("Authorization", "Bearer "+c.token)
			} else {
				pr.Out.Header.Del("Authorization")
			}
			if token != "" {
				pr.Out.Header.Set(api.PreviewTokenHeader, token)
			}
		},
		Transport: c.transport(),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			writeLocalError(w, api.Errorf(api.CodeSandboxUnavailable, "the daemon could not be reached"))
		},
	}
	// The service may answer before it has read the whole body.
	fullduplex.Enable(w)
	rp.ServeHTTP(w, r)
	// A daemon that could not be reached, or a service that answered
	// first, left the body unread.
	fullduplex.EndBody(w, r)
}

// transport is the round tripper of the client's HTTP client.
func (c *Client) transport() http.RoundTripper {
	if c.http.Transport != nil {
		return c.http.Transport
	}
	return http.DefaultTransport
}

// writeLocalError answers with an error the SDK produced itself.
func writeLocalError(w http.ResponseWriter, e *api.Error) {
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Code.HTTPStatus())
	w.Write(buf.Bytes())
}
