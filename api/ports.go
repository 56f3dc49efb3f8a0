package api

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error codes of exposed ports and preview URLs.
const (
	// CodeInvalidPort: the port is outside 1024-65535 or reserved by the
	// platform.
	CodeInvalidPort Code = "INVALID_PORT"
	// CodePortAlreadyExposed: the port is exposed with other options;
	// exposing it again with the same options is not an error.
	CodePortAlreadyExposed Code = "PORT_ALREADY_EXPOSED"
	// CodePortNotExposed: the call needs an exposed port (a signed link).
	CodePortNotExposed Code = "PORT_NOT_EXPOSED"
	// CodePreviewNotFound: a preview URL names an unknown sandbox, a port
	// that is not exposed, or the wrong token. Which of the three is never
	// said.
	CodePreviewNotFound Code = "PREVIEW_NOT_FOUND"
	// CodeServiceNotResponding: nothing in the sandbox accepted a
	// connection on the port, or the service broke the connection before
	// answering.
	CodeServiceNotResponding Code = "SERVICE_NOT_RESPONDING"
	// CodePreviewBusy: the sandbox's services, or the daemon's preview
	// proxy as a whole, have as many requests in flight as allowed; the
	// answer carries Retry-After.
	CodePreviewBusy Code = "PREVIEW_BUSY"
)

func init() {
	RegisterStatus(CodeInvalidPort, http.StatusBadRequest)
	RegisterStatus(CodePortAlreadyExposed, http.StatusConflict)
	RegisterStatus(CodePortNotExposed, http.StatusNotFound)
	RegisterStatus(CodePreviewNotFound, http.StatusNotFound)
	RegisterStatus(CodeServiceNotResponding, http.StatusBadGateway)
	RegisterStatus(CodePreviewBusy, http.StatusServiceUnavailable)
}

// Limits of exposed ports, shared by the daemon and the SDK.
const (
	// MinExposedPort and MaxExposedPort bound the ports that can be
	// exposed.
	MinExposedPort = 1024
	MaxExposedPort = 65535
	// MaxExposedPorts is how many ports one sandbox may expose.
	MaxExposedPorts = 32
	// MaxPortNameBytes bounds an exposed port's name.
	MaxPortNameBytes = 64
	// MinPreviewTokenBytes and MaxPreviewTokenBytes bound a caller-chosen
	// preview token: 12-16 of a-z, 0-9 and _ (at least 62 bits, when
	// chosen at random). Hosts with shorter tokens still parse, so that
	// ports exposed before the minimum keep working until re-exposed.
	MinPreviewTokenBytes = 12
	MaxPreviewTokenBytes = 16
	// DefaultLinkExpiry and MaxLinkExpiry bound a signed preview link's
	// life.
	DefaultLinkExpiry = time.Hour
	MaxLinkExpiry     = 7 * 24 * time.Hour
)

// PreviewTokenHeader carries a preview URL's token on the authenticated
// proxy route (/v1/sandboxes/{id}/ports/{port}/proxy/...), so that a
// front-end server (the SDK's PreviewHandler) gets the same answer as the
// preview URL would: PREVIEW_NOT_FOUND unless the port is exposed with that
// token.
const PreviewTokenHeader = "X-Sandboxd-Preview-Token"

// ExposePortRequest is the body of POST /v1/sandboxes/{id}/ports.
type ExposePortRequest struct {
	// Port is the port the service listens on inside the sandbox, on
	// 0.0.0.0 or 127.0.0.1: 1024-65535.
	Port int `json:"port"`
	// Name is a label for people, at most 64 bytes of printable text.
	// Optional.
	Name string `json:"name,omitempty"`
	// Token is the secret part of the preview URL: 12-16 of a-z, 0-9 and
	// _. Optional; by default a random 16-character token.
	Token string `json:"token,omitempty"`
	// Public says whether the preview URL alone grants access (default
	// true). A private port also wants the API token or a signed link.
	Public *bool `json:"public,omitempty"`
}

// ExposedPort is one exposed port, as returned by expose and list.
type ExposedPort struct {
	Port   int    `json:"port"`
	Name   string `json:"name,omitempty"`
	Public bool   `json:"public"`
	// URL is the preview URL: {scheme}://{port}-{sandboxId}-{token}.{domain}[:{port}]/
	URL string `json:"url"`
	// Token is the secret part of URL.
	Token     string    `json:"token"`
	CreatedAt time.Time `json:"createdAt"`
}

// ExposedPortList is the body of GET /v1/sandboxes/{id}/ports.
type ExposedPortList struct {
	Ports []ExposedPort `json:"ports"`
}

// PreviewLinkRequest is the body of POST /v1/sandboxes/{id}/ports/{port}/links.
type PreviewLinkRequest struct {
	// ExpiresIn is the link's life in milliseconds; default one hour, at
	// most seven days.
	ExpiresIn int64 `json:"expiresIn,omitempty"`
}

// PreviewLink is a signed, expiring link to an exposed port. Opening it
// sets a cookie scoped to the preview host that grants access to a private
// port until ExpiresAt; the link's own secret is then removed from the
// address with a redirect.
type PreviewLink struct {
	URL       string    `json:"url"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// PreviewHost returns the preview host name of port of sandbox id with
// token, on domain (without a port): {port}-{sandboxId}-{token}.{domain}.
func PreviewHost(port int, sandboxID, token, domain string) string {
	return strconv.Itoa(port) + "-" + sandboxID + "-" + token + "." + domain
}

// ParsePreviewHost parses host, a Host header (with or without a port), as
// a preview host on domain: {port}-{sandboxId}-{token}.{domain}. Sandbox
// IDs may contain '-', tokens and ports may not, so the port ends at the
// first '-' and the token starts after the last. Upper case is folded
// (host names are case-insensitive); a port with a leading zero is refused
// so that every preview has one spelling.
func ParsePreviewHost(host, domain string) (port int, sandboxID, token string, ok bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	label, ok := strings.CutSuffix(host, "."+strings.ToLower(domain))
	if !ok || label == "" || strings.Contains(label, ".") {
		return 0, "", "", false
	}
	first := strings.IndexByte(label, '-')
	last := strings.LastIndexByte(label, '-')
	if first <= 0 || last-first < 2 {
		return 0, "", "", false
	}
	portText, id, tok := label[:first], label[first+1:last], label[last+1:]
	port, ok = ParsePort(portText)
	if !ok || ValidateSandboxID(id) != nil || !ValidPreviewToken(tok) {
		return 0, "", "", false
	}
	return port, id, tok, true
}

// ParsePort parses a port as it appears in host names and URL paths: a
// decimal number 1-65535 without sign or leading zero.
func ParsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, n >= 1 && n <= 65535
}

// ValidPreviewToken reports whether s can be a preview token: 1-16 of a-z,
// 0-9 and _.
func ValidPreviewToken(s string) bool {
	if s == "" || len(s) > MaxPreviewTokenBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
