// Package s3 is the small S3 client the daemon needs: it checks that a
// bucket can be reached with the given credentials before a mount is
// attempted (so a caller hears BUCKET_UNREACHABLE, BUCKET_AUTH_FAILED or
// BUCKET_NOT_FOUND instead of a FUSE client's log line), and it lets tests
// put and get objects on a real server. Requests are signed with AWS
// Signature Version 4 and use path-style URLs, which every S3-compatible
// server accepts. It never logs or returns credentials.
package s3

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Credentials sign requests. SessionToken is optional (temporary
// credentials).
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// Client talks to one S3-compatible endpoint.
type Client struct {
	// Endpoint is the server's base URL, http or https, e.g.
	// http://127.0.0.1:7070.
	Endpoint string
	// Region signs requests; "us-east-1" when empty.
	Region string
	Creds  Credentials
	// HTTP is the client used; a client with a 30 s timeout when nil.
	HTTP *http.Client
}

// Errors a bucket check classifies into; wrapped, test with errors.Is.
var (
	ErrUnreachable = errors.New("bucket endpoint unreachable")
	ErrAuth        = errors.New("bucket credentials refused")
	ErrNotFound    = errors.New("bucket not found")
)

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// CheckBucket lists at most one key under prefix: it proves the endpoint
// answers, the credentials are accepted and the bucket exists (a HEAD
// request cannot tell a missing bucket from refused credentials on some
// servers, and carries no error code).
func (c *Client) CheckBucket(ctx context.Context, bucket, prefix string) error {
	q := url.Values{"list-type": {"2"}, "max-keys": {"1"}}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	resp, err := c.do(ctx, http.MethodGet, bucket, "", q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return nil
}

// CreateBucket makes bucket; tests use it.
func (c *Client) CreateBucket(ctx context.Context, bucket string) error {
	resp, err := c.do(ctx, http.MethodPut, bucket, "", nil, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// PutObject writes data as bucket/key.
func (c *Client) PutObject(ctx context.Context, bucket, key string, data []byte) error {
	resp, err := c.do(ctx, http.MethodPut, bucket, key, nil, data)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// GetObject reads bucket/key whole, up to limit bytes.
func (c *Client) GetObject(ctx context.Context, bucket, key string, limit int64) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, bucket, key, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, limit))
}

// do sends a signed request and classifies failures: transport errors are
// ErrUnreachable, 401/403 ErrAuth, 404 ErrNotFound (NoSuchKey too), other
// non-2xx statuses an error with the server's code.
func (c *Client) do(ctx context.Context, method, bucket, key string, q url.Values, body []byte) (*http.Response, error) {
	sum := sha256.Sum256(body)
	return c.doStream(ctx, method, bucket, key, q, bytes.NewReader(body), int64(len(body)), hex.EncodeToString(sum[:]))
}

// doStream is do with a body read from r: length bytes whose SHA-256 is
// payload (hex).
func (c *Client) doStream(ctx context.Context, method, bucket, key string, q url.Values, r io.Reader, length int64, payload string) (*http.Response, error) {
	req, err := c.request(ctx, method, bucket, key, q, r, length, payload)
	if err != nil {
		return nil, err
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		// Whatever failed before an answer (refused, reset, timed out,
		// TLS) means the endpoint cannot be used.
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, redact(err))
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	code := xmlField(msg, "Code")
	switch {
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("%w (%d %s)", ErrAuth, resp.StatusCode, code)
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w (%s)", ErrNotFound, code)
	}
	return nil, fmt.Errorf("s3 %s: status %d %s", method, resp.StatusCode, code)
}

// redact drops the URL from a transport error: it names the endpoint only.
func redact(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// xmlField returns the text of the first <name> element of an S3 error
// document (enough for its Code; a full XML decode is not needed).
func xmlField(doc []byte, name string) string {
	open, end := "<"+name+">", "</"+name+">"
	i := bytes.Index(doc, []byte(open))
	if i < 0 {
		return ""
	}
	rest := doc[i+len(open):]
	j := bytes.Index(rest, []byte(end))
	if j < 0 || j > 256 {
		return ""
	}
	return string(rest[:j])
}

// request builds a path-style request signed with Signature Version 4.
func (c *Client) request(ctx context.Context, method, bucket, key string, q url.Values, body io.Reader, length int64, payload string) (*http.Request, error) {
	base, err := url.Parse(c.Endpoint)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("endpoint %q: want an http or https URL", c.Endpoint)
	}
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + bucket
	if key != "" {
		u.Path += "/" + key
	}
	u.RawPath = uriEncode(u.Path, false)
	u.RawQuery = canonicalQuery(q)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	c.sign(req, payload, time.Now().UTC())
	return req, nil
}

func (c *Client) region() string {
	if c.Region == "" {
		return "us-east-1"
	}
	return c.Region
}

// sign adds the SigV4 headers to req.
func (c *Client) sign(req *http.Request, payload string, now time.Time) {
	amzDate := now.Format("20060102T150405Z")
	day := now.Format("20060102")
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-Content-Sha256", payload)
	if c.Creds.SessionToken != "" {
		req.Header.Set("X-Amz-Security-Token", c.Creds.SessionToken)
	}
	headers := map[string]string{"host": req.URL.Host}
	for k, v := range req.Header {
		headers[strings.ToLower(k)] = strings.TrimSpace(strings.Join(v, ","))
	}
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	var canonHeaders strings.Builder
	for _, k := range names {
		canonHeaders.WriteString(k + ":" + headers[k] + "\n")
	}
	signed := strings.Join(names, ";")
	canonical := strings.Join([]string{req.Method, req.URL.EscapedPath(), req.URL.RawQuery,
		canonHeaders.String(), signed, payload}, "\n")
	scope := day + "/" + c.region() + "/s3/aws4_request"
	hashed := sha256.Sum256([]byte(canonical))
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(hashed[:])
	k := hmacSHA256([]byte("AWS4"+c.Creds.SecretAccessKey), day)
	k = hmacSHA256(k, c.region())
	k = hmacSHA256(k, "s3")
	k = hmacSHA256(k, "aws4_request")
	sig := hex.EncodeToString(hmacSHA256(k, toSign))
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+c.Creds.AccessKeyID+"/"+scope+
		", SignedHeaders="+signed+", Signature="+sig)
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// canonicalQuery encodes q sorted by key, as SigV4 wants (and as sent, so
// the signature matches).
func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		vs := append([]string(nil), q[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			parts = append(parts, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	return strings.Join(parts, "&")
}

// uriEncode is SigV4's URI encoding: unreserved characters stay, others
// become %XX; '/' stays in paths.
func uriEncode(s string, encodeSlash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'A' && ch <= 'Z', ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9',
			ch == '-', ch == '_', ch == '.', ch == '~':
			b.WriteByte(ch)
		case ch == '/' && !encodeSlash:
			b.WriteByte(ch)
		default:
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}
