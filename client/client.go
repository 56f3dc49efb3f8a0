package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/sandboxd/sandboxd/api"
)

// Defaults and environment variables read by FromEnv (and the CLI).
const (
	// DefaultURL is where a local daemon listens unless told otherwise.
	DefaultURL = "http://127.0.0.1:7070"
	// EnvURL names the environment variable holding the daemon's URL.
	EnvURL = "SANDBOX_URL"
	// EnvToken names the environment variable holding the API token.
	EnvToken = "SANDBOX_TOKEN"
)

// defaultUserAgent is sent unless WithUserAgent replaces it.
const defaultUserAgent = "sandboxd-go-client"

// maxErrorBodyBytes bounds how much of an error response is read, so a
// misbehaving server or proxy cannot make the client buffer without end.
const maxErrorBodyBytes = 1 << 20

// maxDrainBytes is how much of an unread response body is discarded before
// closing it, so that the connection can be reused; beyond that the
// connection is dropped instead.
const maxDrainBytes = 64 << 10

// Client talks to one sandboxd daemon. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	token     string
	http      *http.Client
	userAgent string
	tenant    string
}

// Option configures a Client.
type Option func(*Client)

// WithToken sets the bearer token sent with every request.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient replaces the HTTP client (http.DefaultClient by default),
// for example to dial a unix socket or to add TLS settings. Do not give it a
// Timeout: streams last as long as their command; use contexts instead.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) {
		if hc != nil {
			c.http = hc
		}
	}
}

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a Client for the daemon at baseURL, e.g.
// "http://127.0.0.1:7070". A path in baseURL is kept as a prefix, for daemons
// behind a reverse proxy. New does no I/O.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("parsing daemon URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("daemon URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("daemon URL %q has no host", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("daemon URL %q: must not carry a query, fragment or user info", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	c := &Client{base: u, http: http.DefaultClient, userAgent: defaultUserAgent}
	for _, opt := range opts {
		opt(c)
	}
	if c.tenant != "" {
		hc := *c.http
		hc.Transport = tenantTransport{tenant: c.tenant, next: hc.Transport}
		c.http = &hc
	}
	return c, nil
}

// FromEnv returns a Client configured from the environment: the URL from
// SANDBOX_URL (default DefaultURL) and the token from SANDBOX_TOKEN. opts are
// applied after, so they win.
func FromEnv(opts ...Option) (*Client, error) {
	base := os.Getenv(EnvURL)
	if base == "" {
		base = DefaultURL
	}
	all := make([]Option, 0, len(opts)+1)
	if tok := os.Getenv(EnvToken); tok != "" {
		all = append(all, WithToken(tok))
	}
	return New(base, append(all, opts...)...)
}

// URL returns the daemon's base URL.
func (c *Client) URL() string { return c.base.String() }

// Health reports the daemon's status and version.
func (c *Client) Health(ctx context.Context) (*api.Health, error) {
	var h api.Health
	if err := c.doJSON(ctx, http.MethodGet, "/v1/health", nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// List returns every sandbox the caller may see, in the daemon's order
// (every page of ListPage).
func (c *Client) List(ctx context.Context) ([]api.Sandbox, error) {
	return c.ListAll(ctx, ListOptions{})
}

// sandboxPath returns the API path of sandbox id plus suffix.
func sandboxPath(id, suffix string) string {
	return "/v1/sandboxes/" + url.PathEscape(id) + suffix
}

// doJSON sends a request with body in (nil for none) as JSON, and decodes a
// 2xx answer into out (nil to discard it). Any other status is returned as
// an *Error.
func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in, "application/json")
	if err != nil {
		return err
	}
	defer closeBody(resp.Body)
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("%s %s: decoding response: %w", method, path, err)
	}
	return nil
}

// send performs one request and returns the response when its status is
// 2xx; the caller must close its body. Any other status is read (bounded),
// its body closed, and returned as an *Error.
func (c *Client) send(ctx context.Context, method, path string, in any, accept string) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encoding request: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	u := *c.base
	p, query, _ := strings.Cut(path, "?")
	u.Path += p
	u.RawQuery = query
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// The daemon could not be reached, or the connection broke before
		// an answer: the caller may retry later.
		// (err, a *url.Error, names the method and URL.)
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer closeBody(resp.Body)
		return nil, readError(resp)
	}
	return resp, nil
}

// closeBody drains a little of what is left of body, so that the connection
// can be reused, and closes it.
func closeBody(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxDrainBytes))
	_ = body.Close()
}

// readError turns a non-2xx response into an *Error. Bodies that are not an
// api.Error (a proxy's HTML page, say) still give an *Error with the status,
// an empty code and the start of the body as message.
func readError(resp *http.Response) *Error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	e := &Error{Status: resp.StatusCode}
	var wire api.Error
	if err := json.Unmarshal(data, &wire); err == nil && wire.Code != "" {
		e.Code, e.Message, e.Details = wire.Code, wire.Message, wire.Details
		return e
	}
	msg := strings.TrimSpace(string(data))
	if i := strings.IndexAny(msg, "\r\n"); i >= 0 {
		msg = msg[:i]
	}
	const maxMessage = 200
	if len(msg) > maxMessage {
		msg = strings.ToValidUTF8(msg[:maxMessage], "") + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}
