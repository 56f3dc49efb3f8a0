package e2b

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/copybuf"
)

// parseHost parses an E2B host name below domain: <port>-<id>.<domain>,
// with exactly one '-' (E2B IDs have none; sandboxd's own preview hosts,
// <port>-<id>-<token>, have at least two, so the forms never overlap).
func parseHost(host, domain string) (port int, id string, ok bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	label, ok := strings.CutSuffix(host, "."+strings.ToLower(domain))
	if !ok || strings.Contains(label, ".") || strings.Count(label, "-") != 1 {
		return 0, "", false
	}
	portText, id, _ := strings.Cut(label, "-")
	port, ok = api.ParsePort(portText)
	if !ok || api.ValidateSandboxID(id) != nil {
		return 0, "", false
	}
	return port, id, true
}

// servePort forwards a getHost request to the sandbox's port, through
// the daemon's authenticated port proxy (the port need not be exposed,
// as on E2B). Sandboxes created with allowPublicTraffic false need the
// traffic access token in e2b-traffic-access-token.
func (s *Server) servePort(w http.ResponseWriter, r *http.Request, e entry, port int) {
	if e.PrivateTraffic {
		got := r.Header.Get("E2b-Traffic-Access-Token")
		if subtle.ConstantTimeCompare([]byte(got), []byte(s.table.token("traffic", e.ID))) != 1 {
			writeControlJSON(w, http.StatusForbidden, controlErrorf(http.StatusForbidden, "this sandbox's ports need the e2b-traffic-access-token header"))
			return
		}
	}
	if e.Paused {
		writeControlJSON(w, http.StatusBadGateway, controlErrorf(http.StatusBadGateway, "sandbox %q is paused", e.ID))
		return
	}
	base, err := url.Parse(s.opts.BaseURL)
	if err != nil {
		writeControlJSON(w, http.StatusInternalServerError, controlErrorf(http.StatusInternalServerError, "%s", err.Error()))
		return
	}
	prefix := sandboxPath(e.ID, "ports/"+strconv.Itoa(port)+"/proxy")
	rp := &httputil.ReverseProxy{
		Transport: s.up.hc.Transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = base.Scheme, base.Host
			pr.Out.URL.Path = prefix + pr.In.URL.Path
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Host = base.Host
			pr.Out.Header.Set("Authorization", "Bearer "+s.opts.Token)
			pr.Out.Header.Del("E2b-Traffic-Access-Token")
			pr.SetXForwarded()
			pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
		},
		FlushInterval: -1,
		BufferPool:    copybuf.Default,
	}
	rp.ServeHTTP(w, r)
}
