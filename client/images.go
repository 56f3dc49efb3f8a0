package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

// ListImages returns the daemon's images: the built-in "host" image first,
// then the image store's.
func (c *Client) ListImages(ctx context.Context) ([]api.Image, error) {
	var l api.ImageList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/images", nil, &l); err != nil {
		return nil, err
	}
	return l.Images, nil
}

// Image returns the image name (or config digest). An unknown image is an
// error matching ErrNotFound (IMAGE_NOT_FOUND).
func (c *Client) Image(ctx context.Context, name string) (*api.Image, error) {
	var img api.Image
	if err := c.doJSON(ctx, http.MethodGet, imagePath(name), nil, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

// RemoveImage removes the image name. While a sandbox uses the image it
// fails with IMAGE_IN_USE (matching ErrConflict). Layers no image needs any
// more are deleted.
func (c *Client) RemoveImage(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, imagePath(name), nil, nil)
}

// PullImage pulls ref from its registry into the daemon's store, under name
// (empty: ref as given). The daemon uses its own registry credentials.
func (c *Client) PullImage(ctx context.Context, ref, name string) (*api.Image, error) {
	var img api.Image
	if err := c.doJSON(ctx, http.MethodPost, "/v1/images/pull", api.ImagePullRequest{Ref: ref, Name: name}, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

// ImportImage uploads an image archive read from archive, a `docker save`
// tarball or an OCI image layout packed as a tar, and stores it under name
// (empty: the name the archive gives).
func (c *Client) ImportImage(ctx context.Context, archive io.Reader, name string) (*api.Image, error) {
	q := url.Values{}
	if name != "" {
		q.Set(api.ImportParamName, name)
	}
	resp, err := c.sendRaw(ctx, http.MethodPost, "/v1/images/import", q, archive, "application/x-tar", "application/json")
	if err != nil {
		return nil, err
	}
	defer closeBody(resp.Body)
	var img api.Image
	if err := decodeJSONBody(ctx, resp.Body, &img); err != nil {
		return nil, fmt.Errorf("POST /v1/images/import: %w", err)
	}
	return &img, nil
}

// BuildOptions configure BuildImage.
type BuildOptions struct {
	// Name is what the image is stored under. Required.
	Name string
	// Dockerfile is the Dockerfile's path in the context; default
	// "Dockerfile".
	Dockerfile string
	// Args are build arguments (ARG).
	Args map[string]string
	// OnLog receives each line of the build's output as it happens.
	OnLog func(stream, line string)
}

// BuildImage builds a Dockerfile on the daemon (with buildah) and stores
// the result. buildContext is the build context as a tar stream (see
// cmd/sandbox for packing a directory). The build's log streams to
// opts.OnLog; a failed build returns an *Error with code
// IMAGE_BUILD_FAILED whose message ends with the builder's last output.
// Cancelling ctx stops the build.
func (c *Client) BuildImage(ctx context.Context, buildContext io.Reader, opts BuildOptions) (*api.Image, error) {
	if opts.Name == "" {
		return nil, invalidf(api.CodeInvalidImageName, "BuildOptions.Name is required")
	}
	q := url.Values{}
	q.Set(api.BuildParamName, opts.Name)
	if opts.Dockerfile != "" {
		q.Set(api.BuildParamDockerfile, opts.Dockerfile)
	}
	for k, v := range opts.Args {
		q.Add(api.BuildParamArg, k+"="+v)
	}
	resp, err := c.sendRaw(ctx, http.MethodPost, "/v1/images/build", q, buildContext, "application/x-tar", sse.ContentType)
	if err != nil {
		return nil, err
	}
	return readBuildStream(ctx, resp, opts.OnLog)
}

// BuildBaseImage builds the daemon's base image ("base") from its recipe:
// Debian 12 with Python (numpy, pandas, matplotlib, IPython), Node.js,
// git and the usual tools. The recipe's result is cached on the daemon's
// host; rebuild ignores that cache. The log streams to onLog (may be nil).
func (c *Client) BuildBaseImage(ctx context.Context, rebuild bool, onLog func(stream, line string)) (*api.Image, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/images/build-base", api.ImageBuildBaseRequest{Rebuild: rebuild}, sse.ContentType)
	if err != nil {
		return nil, err
	}
	return readBuildStream(ctx, resp, onLog)
}

// readBuildStream reads a build's events to the terminal one.
func readBuildStream(ctx context.Context, resp *http.Response, onLog func(stream, line string)) (*api.Image, error) {
	defer closeBody(resp.Body)
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != sse.ContentType {
		return nil, fmt.Errorf("build: answer is %q, not an event stream", resp.Header.Get("Content-Type"))
	}
	es := newEventStream("build stream", ctx, resp.Body)
	defer es.Close()
	for {
		var ev api.BuildEvent
		name, err := es.next(&ev)
		if err != nil {
			return nil, err
		}
		ev.Type = name
		switch name {
		case api.BuildEventLog:
			if onLog != nil {
				onLog(ev.Stream, ev.Data)
			}
		case api.BuildEventComplete:
			if ev.Image == nil {
				return nil, fmt.Errorf("build: complete event without an image: %w", ErrUnavailable)
			}
			return ev.Image, nil
		case api.BuildEventError:
			return nil, &Error{Code: ev.Code, Message: ev.Message}
		default:
			if api.IsTerminal(name) {
				return nil, fmt.Errorf("build stream ended with %q: %w", name, ErrUnavailable)
			}
		}
	}
}

// imagePath is the API path of an image; a name's '/' are escaped, so it
// is one path segment.
func imagePath(name string) string { return "/v1/images/" + url.PathEscape(name) }

// sendRaw is send with a raw body of the given content type and a query.
func (c *Client) sendRaw(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType, accept string) (*http.Response, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", contentType)
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
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer closeBody(resp.Body)
		return nil, readError(resp)
	}
	return resp, nil
}

func decodeJSONBody(ctx context.Context, body io.Reader, out any) error {
	if err := jsonDecode(body, out); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		return fmt.Errorf("decoding response: %w", err)
	}
	return nil
}

func jsonDecode(r io.Reader, out any) error { return json.NewDecoder(r).Decode(out) }
