package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/sandboxd/sandboxd/api"
)

// WithTenant makes an admin key act in tenant name's namespace: every
// sandbox ID is that tenant's (the Sandbox-Tenant header; "default" is
// the admin namespace). The daemon refuses it for tenant keys.
func WithTenant(name string) Option { return func(c *Client) { c.tenant = name } }

// tenantTransport adds the Sandbox-Tenant header to every request.
type tenantTransport struct {
	tenant string
	next   http.RoundTripper
}

func (t tenantTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(api.TenantHeader, t.tenant)
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(r)
}

// ListOptions filter and page GET /v1/sandboxes.
type ListOptions struct {
	// Labels must all match (label=k=v).
	Labels map[string]string
	// Status, when set, is the one status listed.
	Status api.SandboxStatus
	// Tenant (admin keys only) lists that tenant's sandboxes; "default"
	// the admin namespace's. Empty: every tenant's for an admin.
	Tenant string
	// Limit is the page size (1 to api.MaxListLimit; 0: the daemon's
	// default, api.MaxListLimit).
	Limit int
	// PageToken continues from a previous page's NextPageToken.
	PageToken string
}

func (o ListOptions) query() string {
	v := url.Values{}
	for k, val := range o.Labels {
		v.Add("label", k+"="+val)
	}
	if o.Status != "" {
		v.Set("status", string(o.Status))
	}
	if o.Tenant != "" {
		v.Set("tenant", o.Tenant)
	}
	if o.Limit > 0 {
		v.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.PageToken != "" {
		v.Set("pageToken", o.PageToken)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// ListPage returns one page of sandboxes; its NextPageToken, when set,
// is the PageToken of the next.
func (c *Client) ListPage(ctx context.Context, o ListOptions) (*api.SandboxList, error) {
	var l api.SandboxList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/sandboxes"+o.query(), nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// ListAll returns every sandbox that matches o, page after page.
func (c *Client) ListAll(ctx context.Context, o ListOptions) ([]api.Sandbox, error) {
	var out []api.Sandbox
	for {
		l, err := c.ListPage(ctx, o)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Sandboxes...)
		if l.NextPageToken == "" {
			return out, nil
		}
		o.PageToken = l.NextPageToken
	}
}

// CreateKey makes an API key (admin keys only). The answer's Key is the
// secret, shown this once.
func (c *Client) CreateKey(ctx context.Context, req api.KeyCreateRequest) (*api.KeyCreated, error) {
	var out api.KeyCreated
	if err := c.doJSON(ctx, http.MethodPost, "/v1/keys", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListKeys lists the API keys with their quotas and usage, never secrets.
func (c *Client) ListKeys(ctx context.Context) ([]api.Key, error) {
	var out api.KeyList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/keys", nil, &out); err != nil {
		return nil, err
	}
	return out.Keys, nil
}

// RemoveKey deletes key name; its secret stops working at once.
func (c *Client) RemoveKey(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/keys/"+url.PathEscape(name), nil, nil)
}

// RotateKey gives key name a new secret; the old one stops working.
func (c *Client) RotateKey(ctx context.Context, name string) (*api.KeyCreated, error) {
	var out api.KeyCreated
	if err := c.doJSON(ctx, http.MethodPost, "/v1/keys/"+url.PathEscape(name)+"/rotate", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
