package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Bounds on what the API server sends back: one object, and one page of a
// list (lists are read in pages of ListPageSize).
const (
	maxObjectBytes = 4 << 20
	maxListBytes   = 64 << 20
	// ListPageSize is how many objects one list request asks for.
	ListPageSize = 500
	// requestTimeout bounds every request but watches.
	requestTimeout = 30 * time.Second
	// tokenRefresh is how often a TokenFile is read again.
	tokenRefresh = time.Minute
)

// Client is a client of one API server and namespace. It is safe for
// concurrent use.
type Client struct {
	base      *url.URL
	namespace string
	hc        *http.Client

	// tokenMu guards token and tokenRead (TokenFile's last read).
	tokenMu   sync.Mutex
	token     string
	tokenFile string
	tokenRead time.Time
}

// New returns a client of cfg's server.
func New(cfg *Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	base, _ := url.Parse(strings.TrimRight(cfg.Server, "/"))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil // the API server is reached directly, never through $HTTPS_PROXY
	tr.MaxIdleConnsPerHost = 16
	tr.ResponseHeaderTimeout = requestTimeout
	return &Client{
		base: base, namespace: cfg.Namespace, hc: &http.Client{Transport: tr},
		token: cfg.Token, tokenFile: cfg.TokenFile,
	}, nil
}

// Namespace is the namespace the client's objects live in.
func (c *Client) Namespace() string { return c.namespace }

// bearer returns the token to send, re-reading TokenFile when due.
func (c *Client) bearer() (string, error) {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	if c.tokenFile == "" || time.Since(c.tokenRead) < tokenRefresh {
		return c.token, nil
	}
	data, err := readFile(c.tokenFile)
	if err != nil {
		if c.token != "" {
			return c.token, nil // keep the last token; the server says when it expired
		}
		return "", fmt.Errorf("reading the token file: %w", err)
	}
	c.token, c.tokenRead = strings.TrimSpace(string(data)), time.Now()
	return c.token, nil
}

// Errors a caller tells apart with errors.Is; an *APIError is each of the
// ones its status and reason say.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: an update or delete named a resourceVersion (or UID)
	// that is no longer the object's: read it again and retry.
	ErrConflict = errors.New("conflict: the object changed")
	// ErrGone: a watch or list asked for a resourceVersion the server no
	// longer has: list again.
	ErrGone         = errors.New("resource version too old")
	ErrUnauthorized = errors.New("unauthorized")
	ErrForbidden    = errors.New("forbidden")
	ErrInvalid      = errors.New("invalid object")
	// ErrUnavailable: the API server could not be reached, did not
	// answer in time, or answered that it cannot serve now (5xx, 429);
	// a later try may succeed.
	ErrUnavailable = errors.New("kubernetes API unavailable")
)

// APIError is a failed request's status (the API's metav1.Status).
type APIError struct {
	// StatusCode is the HTTP status; Reason the API's reason
	// (NotFound, AlreadyExists, Conflict, Expired, ...); Message its
	// text, bounded.
	StatusCode int
	Reason     string
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("kubernetes API: %d %s: %s", e.StatusCode, e.Reason, e.Message)
}

// Is makes errors.Is(err, ErrConflict) and the others work.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrAlreadyExists:
		return e.Reason == "AlreadyExists"
	case ErrConflict:
		return e.StatusCode == http.StatusConflict && e.Reason != "AlreadyExists"
	case ErrGone:
		return e.StatusCode == http.StatusGone || e.Reason == "Expired"
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrInvalid:
		return e.StatusCode == http.StatusUnprocessableEntity
	case ErrUnavailable:
		return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// status is the part of metav1.Status an error carries.
type status struct {
	Kind    string `json:"kind"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Code    int    `json:"code"`
}

// maxMessage bounds an error message taken from the server.
const maxMessage = 512

func apiError(code int, body []byte) *APIError {
	e := &APIError{StatusCode: code, Reason: http.StatusText(code)}
	var st status
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" {
		if st.Reason != "" {
			e.Reason = st.Reason
		}
		e.Message = st.Message
	} else {
		e.Message = string(body)
	}
	if len(e.Message) > maxMessage {
		e.Message = e.Message[:maxMessage] + "..."
	}
	return e
}

// request is one API call.
type request struct {
	method string
	path   string // below the server's base URL, already escaped
	query  url.Values
	body   any
	// limit bounds the response body; 0: maxObjectBytes.
	limit int64
}

// send performs r and returns the response, whose body the caller closes;
// a non-2xx answer becomes an *APIError.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	var body io.Reader
	if r.body != nil {
		data, err := json.Marshal(r.body)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(data)
	}
	u := *c.base
	u.Path += r.path
	u.RawPath = ""
	if r.query != nil {
		u.RawQuery = r.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok, err := c.bearer()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) { // the caller left: not the API's fault
			return nil, fmt.Errorf("kubernetes API %s %s: %w", r.method, r.path, err)
		}
		return nil, fmt.Errorf("kubernetes API %s %s: %w: %w", r.method, r.path, ErrUnavailable, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, apiError(resp.StatusCode, data)
	}
	return resp, nil
}

// do performs r and decodes the answer into out (when not nil), bounded.
func (c *Client) do(ctx context.Context, r request, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	limit := r.limit
	if limit == 0 {
		limit = maxObjectBytes
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("kubernetes API %s %s: reading the answer: %w", r.method, r.path, err)
	}
	if int64(len(data)) > limit {
		return fmt.Errorf("kubernetes API %s %s: answer larger than %d bytes", r.method, r.path, limit)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("kubernetes API %s %s: decoding the answer: %w", r.method, r.path, err)
	}
	return nil
}

// ValidateName checks an object or namespace name the client puts in a
// URL: a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at
// most 253 bytes, alphanumeric at both ends).
func ValidateName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("name %q: want 1 to 253 bytes", name)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		alnum := 'a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9'
		if !alnum && ((ch != '-' && ch != '.') || i == 0 || i == len(name)-1) {
			return fmt.Errorf("name %q: want lowercase letters, digits, '-' and '.', alphanumeric at both ends", name)
		}
	}
	return nil
}

// ListOptions select and page objects of a list or watch.
type ListOptions struct {
	// LabelSelector is the API's label selector ("a=b,c!=d,e").
	LabelSelector string
	// ResourceVersion: a watch starts after it; empty: a list reads the
	// latest state, a watch starts from now.
	ResourceVersion string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	if o.ResourceVersion != "" {
		q.Set("resourceVersion", o.ResourceVersion)
	}
	return q
}
