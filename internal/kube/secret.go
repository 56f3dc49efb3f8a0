package kube

import "context"

var secrets = kind{prefix: "/api/v1", plural: "secrets", apiVersion: "v1", name: "Secret"}

// Secret is a core/v1 Secret.
type Secret struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Type       string     `json:"type,omitempty"`
	// Data is the Secret's contents (base64 on the wire).
	Data map[string][]byte `json:"data,omitempty"`
}

func (s *Secret) meta() *ObjectMeta { return &s.Metadata }

// GetSecret reads the Secret named name (ErrNotFound when none).
func (c *Client) GetSecret(ctx context.Context, name string) (*Secret, error) {
	return get[Secret](ctx, c, secrets, name)
}

// CreateSecret stores s (ErrAlreadyExists when the name is taken).
func (c *Client) CreateSecret(ctx context.Context, s *Secret) (*Secret, error) {
	s.APIVersion, s.Kind = secrets.apiVersion, secrets.name
	return create(ctx, c, secrets, s)
}

// UpdateSecret replaces s if its resourceVersion is still the stored one
// (ErrConflict otherwise).
func (c *Client) UpdateSecret(ctx context.Context, s *Secret) (*Secret, error) {
	s.APIVersion, s.Kind = secrets.apiVersion, secrets.name
	return update(ctx, c, secrets, s)
}

// ListSecrets reads the Secrets matching o's label selector.
func (c *Client) ListSecrets(ctx context.Context, o ListOptions) ([]Secret, string, error) {
	return list[Secret](ctx, c, secrets, o)
}

// DeleteSecret deletes the Secret named name if pre holds.
func (c *Client) DeleteSecret(ctx context.Context, name string, pre Preconditions) error {
	return remove(ctx, c, secrets, name, pre)
}

// FollowSecrets hands fn the Secrets matching selector (a Sync event) and
// then every change, until ctx ends.
func (c *Client) FollowSecrets(ctx context.Context, selector string, fn func(Event[Secret])) error {
	return follow[Secret, *Secret](ctx, c, secrets, selector, fn)
}
