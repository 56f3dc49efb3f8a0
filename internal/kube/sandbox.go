package kube

import (
	"context"
	"encoding/json"

	"github.com/sandboxd/sandboxd/api"
)

// The Sandbox custom resource: one per sandbox of the cluster.
const (
	Group   = "sandboxd.dev"
	Version = "v1alpha1"
	// SandboxKind is the resource's kind; SandboxResource its plural.
	SandboxKind     = "Sandbox"
	SandboxResource = "sandboxes"
)

// Labels sandboxd puts on its objects, for label selectors.
const (
	// LabelNode is the node a Sandbox is placed on (status.node), or the
	// node a Lease belongs to.
	LabelNode = "sandboxd.dev/node"
	// LabelTenant is a Sandbox's tenant (absent for the admin namespace).
	LabelTenant = "sandboxd.dev/tenant"
	// LabelID is a Sandbox's ID within its tenant: a preview host names
	// only that, so a gateway finds a tenant's sandbox by it.
	LabelID = "sandboxd.dev/id"
)

var sandboxes = kind{
	prefix: "/apis/" + Group + "/" + Version, plural: SandboxResource,
	apiVersion: Group + "/" + Version, name: SandboxKind,
}

// Sandbox is one sandbox of the cluster (sandboxd.dev/v1alpha1 Sandbox).
// Its name is ObjectName(tenant, id), so that two creates of one ID race
// for one name and one of them gets ErrAlreadyExists.
type Sandbox struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   ObjectMeta    `json:"metadata"`
	Spec       SandboxSpec   `json:"spec"`
	Status     SandboxStatus `json:"status,omitempty"`
}

func (s *Sandbox) meta() *ObjectMeta { return &s.Metadata }

// SandboxSpec is what the sandbox was asked to be.
type SandboxSpec struct {
	// ID is the sandbox's ID as its tenant names it.
	ID string `json:"id"`
	// Tenant is the tenant (API key name) that owns it; empty: the admin
	// namespace.
	Tenant string `json:"tenant,omitempty"`
	// Options are the create request's options (the body of PUT /v1/sandboxes/{id}, as
	// JSON), which the node that runs it is given.
	Options json.RawMessage `json:"options,omitempty"`
}

// SandboxStatus is where the sandbox is and what it is doing.
type SandboxStatus struct {
	// Node is the node it is placed on (set when it is placed, in the
	// same write that creates the object: status is not a subresource).
	Node string `json:"node,omitempty"`
	// Phase is its lifecycle status on that node (the API's statuses:
	// creating, running, sleeping, paused, stopped, failed, lost), or
	// PhasePending before the node has it.
	Phase string `json:"phase,omitempty"`
}

// PhasePending is the phase of a placed Sandbox its node does not have
// yet.
const PhasePending = "pending"

// ObjectName is the Sandbox object name of tenant's sandbox id: the ID
// itself in the admin namespace, "TENANT.ID" otherwise (IDs and tenant
// names are DNS labels, so the dot keeps them apart and the name is a
// valid DNS-1123 subdomain).
func ObjectName(tenant, id string) string {
	if tenant == "" {
		return id
	}
	return tenant + "." + id
}

// NewSandbox returns a Sandbox object for tenant's sandbox id placed on
// node, labelled for selectors. It checks the ID and tenant.
func NewSandbox(tenant, id, node string, options json.RawMessage) (*Sandbox, error) {
	if err := api.ValidateSandboxID(id); err != nil {
		return nil, err
	}
	labels := map[string]string{LabelID: id}
	if tenant != "" {
		if err := api.ValidateSandboxID(tenant); err != nil {
			return nil, err
		}
		labels[LabelTenant] = tenant
	}
	if node != "" {
		if err := ValidateNodeName(node); err != nil {
			return nil, err
		}
		labels[LabelNode] = node
	}
	return &Sandbox{
		APIVersion: sandboxes.apiVersion, Kind: sandboxes.name,
		Metadata: ObjectMeta{Name: ObjectName(tenant, id), Labels: labels},
		Spec:     SandboxSpec{ID: id, Tenant: tenant, Options: options},
		Status:   SandboxStatus{Node: node, Phase: PhasePending},
	}, nil
}

// CreateSandbox stores s: ErrAlreadyExists when the name is taken (the
// atomic claim of an ID).
func (c *Client) CreateSandbox(ctx context.Context, s *Sandbox) (*Sandbox, error) {
	s.APIVersion, s.Kind = sandboxes.apiVersion, sandboxes.name
	return create(ctx, c, sandboxes, s)
}

// GetSandbox reads the Sandbox named name (ErrNotFound when none).
func (c *Client) GetSandbox(ctx context.Context, name string) (*Sandbox, error) {
	return get[Sandbox](ctx, c, sandboxes, name)
}

// ListSandboxes reads the Sandboxes matching o's label selector, and the
// list's resourceVersion.
func (c *Client) ListSandboxes(ctx context.Context, o ListOptions) ([]Sandbox, string, error) {
	return list[Sandbox](ctx, c, sandboxes, o)
}

// UpdateSandbox replaces s if s.Metadata.ResourceVersion is still the
// stored one: ErrConflict otherwise (read it again and retry).
func (c *Client) UpdateSandbox(ctx context.Context, s *Sandbox) (*Sandbox, error) {
	s.APIVersion, s.Kind = sandboxes.apiVersion, sandboxes.name
	return update(ctx, c, sandboxes, s)
}

// DeleteSandbox deletes the Sandbox named name if pre holds (ErrConflict
// otherwise; ErrNotFound when it is gone already).
func (c *Client) DeleteSandbox(ctx context.Context, name string, pre Preconditions) error {
	return remove(ctx, c, sandboxes, name, pre)
}

// WatchSandboxes streams changes of the Sandboxes matching o after
// o.ResourceVersion.
func (c *Client) WatchSandboxes(ctx context.Context, o ListOptions) (*Watch[Sandbox], error) {
	return watch[Sandbox](ctx, c, sandboxes, o)
}

// FollowSandboxes hands fn the Sandboxes matching selector (a Sync event)
// and then every change, resuming and relisting as needed, until ctx ends.
func (c *Client) FollowSandboxes(ctx context.Context, selector string, fn func(Event[Sandbox])) error {
	return follow[Sandbox, *Sandbox](ctx, c, sandboxes, selector, fn)
}
