package api

import (
	"net/http"
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
)

func init() {
	RegisterStatus(CodeInvalidPort, http.StatusBadRequest)
	RegisterStatus(CodePortAlreadyExposed, http.StatusConflict)
	RegisterStatus(CodePortNotExposed, http.StatusNotFound)
	RegisterStatus(CodePreviewNotFound, http.StatusNotFound)
	RegisterStatus(CodeServiceNotResponding, http.StatusBadGateway)
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
	// MaxPreviewTokenBytes bounds a caller-chosen preview token; a token
	// is 1-16 of a-z, 0-9 and _.
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
	// Token is the secret part of the preview URL: 1-16 of a-z, 0-9 and
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
