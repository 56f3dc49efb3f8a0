package client

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// ExposeOption sets an option of ExposePort.
type ExposeOption interface {
	applyExpose(*api.ExposePortRequest)
}

type exposeOptionFunc func(*api.ExposePortRequest)

func (f exposeOptionFunc) applyExpose(r *api.ExposePortRequest) { f(r) }

// WithPortName labels the exposed port (at most 64 bytes).
func WithPortName(name string) ExposeOption {
	return exposeOptionFunc(func(r *api.ExposePortRequest) { r.Name = name })
}

// WithPreviewToken chooses the secret part of the preview URL (12-16 of
// a-z, 0-9 and _) instead of a random one, for a URL that stays the same
// when the port is exposed again.
func WithPreviewToken(token string) ExposeOption {
	return exposeOptionFunc(func(r *api.ExposePortRequest) { r.Token = token })
}

// Private makes the preview URL useless on its own: a request must also
// carry the API token, or come from a browser that opened a link from
// PreviewLink.
func Private() ExposeOption {
	return exposeOptionFunc(func(r *api.ExposePortRequest) { f := false; r.Public = &f })
}

// checkPort refuses a port that cannot be exposed without asking the
// daemon.
func checkPort(port int) error {
	if port < api.MinExposedPort || port > api.MaxExposedPort {
		return invalidf(api.CodeInvalidPort, "port %d is outside %d-%d", port, api.MinExposedPort, api.MaxExposedPort)
	}
	return nil
}

// ExposePort makes port, on which a service of the sandbox listens (on
// 0.0.0.0 or 127.0.0.1), reachable at a preview URL, like the reference
// SDK's exposePort. Exposing a port again with the same options returns it
// unchanged; with other options it fails with PORT_ALREADY_EXPOSED
// (ErrConflict). Ports outside 1024-65535 or reserved by the platform are
// INVALID_PORT (ErrInvalid).
func (s *Sandbox) ExposePort(ctx context.Context, port int, opts ...ExposeOption) (*api.ExposedPort, error) {
	if err := checkPort(port); err != nil {
		return nil, err
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	req := api.ExposePortRequest{Port: port}
	for _, o := range opts {
		o.applyExpose(&req)
	}
	var out api.ExposedPort
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/ports"), &req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UnexposePort closes port's preview URL and every link to it. A port that
// is not exposed is not an error. Exposing it again gives a new token (a
// new URL) unless WithPreviewToken names the old one.
func (s *Sandbox) UnexposePort(ctx context.Context, port int) error {
	if err := checkPort(port); err != nil {
		return err
	}
	if err := s.prepare(ctx); err != nil {
		return err
	}
	return s.c.doJSON(ctx, http.MethodDelete, sandboxPath(s.id, "/ports/"+strconv.Itoa(port)), nil, nil)
}

// ExposedPorts lists the sandbox's exposed ports with their preview URLs,
// by port.
func (s *Sandbox) ExposedPorts(ctx context.Context) ([]api.ExposedPort, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var out api.ExposedPortList
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/ports"), nil, &out); err != nil {
		return nil, err
	}
	return out.Ports, nil
}

// PreviewLink mints a signed link to an exposed port that expires after
// expiresIn (0: one hour; at most seven days). Opening it in a browser
// sets a cookie, scoped to that preview host, that opens a private port
// until the link expires. Unexposing the port voids its links.
func (s *Sandbox) PreviewLink(ctx context.Context, port int, expiresIn time.Duration) (*api.PreviewLink, error) {
	if err := checkPort(port); err != nil {
		return nil, err
	}
	if expiresIn < 0 || expiresIn > api.MaxLinkExpiry {
		return nil, invalidf(api.CodeValidationFailed, "expiresIn %s is out of range (0 to %s)", expiresIn, api.MaxLinkExpiry)
	}
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	req := api.PreviewLinkRequest{ExpiresIn: int64((expiresIn + time.Millisecond - 1) / time.Millisecond)}
	var out api.PreviewLink
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/ports/"+strconv.Itoa(port)+"/links"), &req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
