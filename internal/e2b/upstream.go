package e2b

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/sandboxd/sandboxd/api"
)

// maxUpstreamJSON bounds a JSON answer of the daemon's own API read whole.
const maxUpstreamJSON = 32 << 20

// upstream calls the daemon's own public API (/v1) through the transport
// the daemon gives (an in-memory pipe to its own server), so every E2B
// call takes the path of an API call: token check, routing, leases,
// forwarding to the agent. The E2B layer holds no second implementation
// of any sandbox operation.
type upstream struct {
	hc    *http.Client
	base  string
	token string
}

// request builds a call of the daemon's API; path starts with /v1.
func (u *upstream) request(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	target := u.base + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	return req, nil
}

// send performs a request and turns an error answer into an *api.Error.
func (u *upstream) send(req *http.Request) (*http.Response, error) {
	resp, err := u.hc.Do(req)
	if err != nil {
		return nil, &api.Error{Code: api.CodeSandboxUnavailable, Message: err.Error()}
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

// call sends in as JSON (nil: no body) and decodes the answer into out
// (nil: discarded).
func (u *upstream) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := u.request(ctx, method, path, nil, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := u.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxUpstreamJSON))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxUpstreamJSON)).Decode(out); err != nil {
		return fmt.Errorf("decoding %s %s: %w", method, path, err)
	}
	return nil
}

// stream opens an event stream (SSE) of the daemon's API.
func (u *upstream) stream(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := u.request(ctx, method, path, nil, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "text/event-stream")
	return u.send(req)
}

func readAPIError(resp *http.Response) *api.Error {
	var e api.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Code == "" {
		return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("HTTP %d from the daemon's API", resp.StatusCode)}
	}
	return &e
}

// sandboxPath is the API path of a sandbox, with an optional suffix.
func sandboxPath(id, suffix string) string {
	p := "/v1/sandboxes/" + url.PathEscape(id)
	if suffix != "" {
		p += "/" + suffix
	}
	return p
}
