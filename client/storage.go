package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/sandboxd/sandboxd/api"
)

// MountOptions are the options of MountBucket. Endpoint is required, and
// exactly one of Credentials and Secret.
type MountOptions struct {
	// Endpoint is the S3 endpoint's URL: https://s3.us-east-1.amazonaws.com,
	// https://<account>.r2.cloudflarestorage.com, http://127.0.0.1:9000.
	Endpoint string
	// Region signs requests; "us-east-1" when empty (R2: "auto").
	Region string
	// Prefix mounts only the keys below it.
	Prefix string
	// ReadOnly: writes in the sandbox fail with EROFS.
	ReadOnly bool
	// Credentials are sent once and kept by the daemon; they never enter
	// the sandbox.
	Credentials *api.BucketCredentials
	// Secret names a secret of the daemon (SetSecret) holding
	// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally
	// AWS_SESSION_TOKEN.
	Secret string
}

// MountBucket mounts bucket (or opts.Prefix of it) at path in the
// sandbox, like the reference SDK's mountBucket, without restarting it.
// The mount is part of the sandbox: it comes back after sleep, restart and
// a host reboot. Errors: BUCKET_UNREACHABLE (ErrUnavailable),
// BUCKET_AUTH_FAILED, BUCKET_ENDPOINT_FORBIDDEN (a tenant's endpoint only
// the host reaches), BUCKET_NOT_FOUND (ErrNotFound), MOUNT_PATH_INVALID
// (ErrInvalid), MOUNT_PATH_IN_USE (ErrConflict).
func (s *Sandbox) MountBucket(ctx context.Context, bucket, path string, opts MountOptions) (*api.Mount, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	req := api.MountRequest{Bucket: bucket, Path: path, Prefix: opts.Prefix, Endpoint: opts.Endpoint,
		Region: opts.Region, ReadOnly: opts.ReadOnly, Credentials: opts.Credentials, Secret: opts.Secret}
	var out api.Mount
	if err := s.c.doJSON(ctx, http.MethodPost, sandboxPath(s.id, "/mounts"), &req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UnmountBucket removes the bucket mount at path (MOUNT_NOT_FOUND,
// ErrNotFound, when there is none).
func (s *Sandbox) UnmountBucket(ctx context.Context, path string) error {
	if err := s.prepare(ctx); err != nil {
		return err
	}
	return s.c.doJSON(ctx, http.MethodDelete, sandboxPath(s.id, "/mounts")+"?"+url.Values{"path": {path}}.Encode(), nil, nil)
}

// Mounts lists the sandbox's bucket mounts with their status.
func (s *Sandbox) Mounts(ctx context.Context) ([]api.Mount, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	var out api.MountList
	if err := s.c.doJSON(ctx, http.MethodGet, sandboxPath(s.id, "/mounts"), nil, &out); err != nil {
		return nil, err
	}
	return out.Mounts, nil
}

// SetSecret stores values (variable name → value) as the daemon's secret
// name, replacing it. Values are never returned.
func (c *Client) SetSecret(ctx context.Context, name string, values map[string]string) error {
	return c.doJSON(ctx, http.MethodPut, "/v1/secrets/"+url.PathEscape(name), &api.SecretRequest{Values: values}, nil)
}

// Secrets lists the daemon's secrets: names and variable names only.
func (c *Client) Secrets(ctx context.Context) ([]api.Secret, error) {
	var out api.SecretList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/secrets", nil, &out); err != nil {
		return nil, err
	}
	return out.Secrets, nil
}

// RemoveSecret deletes the secret name (SECRET_NOT_FOUND, ErrNotFound,
// when there is none). Mounts made with it keep working.
func (c *Client) RemoveSecret(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/secrets/"+url.PathEscape(name), nil, nil)
}

// WithVolume mounts the named volume at path of a sandbox this call
// creates (repeatable; readOnly: writes fail with EROFS).
func WithVolume(name, path string, readOnly bool) SandboxOption {
	return sandboxOptionFunc(func(o *api.SandboxOptions) {
		o.Volumes = append(o.Volumes, api.VolumeMount{Name: name, Path: path, ReadOnly: readOnly})
	})
}

// CreateVolume creates the named volume with a quota of sizeBytes (0: the
// daemon's default, 10 GiB). VOLUME_EXISTS (ErrConflict) if it exists.
func (c *Client) CreateVolume(ctx context.Context, name string, sizeBytes int64) (*api.Volume, error) {
	var out api.Volume
	if err := c.doJSON(ctx, http.MethodPost, "/v1/volumes", &api.VolumeRequest{Name: name, SizeBytes: sizeBytes}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Volumes lists the daemon's volumes.
func (c *Client) Volumes(ctx context.Context) ([]api.Volume, error) {
	var out api.VolumeList
	if err := c.doJSON(ctx, http.MethodGet, "/v1/volumes", nil, &out); err != nil {
		return nil, err
	}
	return out.Volumes, nil
}

// RemoveVolume deletes the named volume and its files; VOLUME_IN_USE
// (ErrConflict) while a sandbox names it.
func (c *Client) RemoveVolume(ctx context.Context, name string) error {
	return c.doJSON(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name), nil, nil)
}
