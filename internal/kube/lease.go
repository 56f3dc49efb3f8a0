package kube

import (
	"context"
	"strings"
	"time"
)

var leases = kind{
	prefix: "/apis/coordination.k8s.io/v1", plural: "leases",
	apiVersion: "coordination.k8s.io/v1", name: "Lease",
}

// Lease is a coordination.k8s.io/v1 Lease.
type Lease struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       LeaseSpec  `json:"spec"`
}

func (l *Lease) meta() *ObjectMeta { return &l.Metadata }

// LeaseSpec is a Lease's holder and times.
type LeaseSpec struct {
	HolderIdentity       *string    `json:"holderIdentity,omitempty"`
	LeaseDurationSeconds *int32     `json:"leaseDurationSeconds,omitempty"`
	AcquireTime          *MicroTime `json:"acquireTime,omitempty"`
	RenewTime            *MicroTime `json:"renewTime,omitempty"`
	LeaseTransitions     *int32     `json:"leaseTransitions,omitempty"`
}

// MicroTime is the API's time with microseconds (metav1.MicroTime).
type MicroTime struct{ time.Time }

// microTimeLayout is metav1.MicroTime's RFC 3339 form.
const microTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// MarshalJSON writes t in UTC with microseconds, as the API wants.
func (t MicroTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(microTimeLayout) + `"`), nil
}

// UnmarshalJSON reads any RFC 3339 time.
func (t *MicroTime) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		t.Time = time.Time{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = v
	return nil
}

// GetLease reads the Lease named name (ErrNotFound when none).
func (c *Client) GetLease(ctx context.Context, name string) (*Lease, error) {
	return get[Lease](ctx, c, leases, name)
}

// CreateLease stores l (ErrAlreadyExists when the name is taken).
func (c *Client) CreateLease(ctx context.Context, l *Lease) (*Lease, error) {
	l.APIVersion, l.Kind = leases.apiVersion, leases.name
	return create(ctx, c, leases, l)
}

// UpdateLease replaces l if its resourceVersion is still the stored one
// (ErrConflict otherwise).
func (c *Client) UpdateLease(ctx context.Context, l *Lease) (*Lease, error) {
	l.APIVersion, l.Kind = leases.apiVersion, leases.name
	return update(ctx, c, leases, l)
}

// ListLeases reads the Leases matching o's label selector.
func (c *Client) ListLeases(ctx context.Context, o ListOptions) ([]Lease, string, error) {
	return list[Lease](ctx, c, leases, o)
}

// DeleteLease deletes the Lease named name if pre holds.
func (c *Client) DeleteLease(ctx context.Context, name string, pre Preconditions) error {
	return remove(ctx, c, leases, name, pre)
}

// FollowLeases hands fn the Leases matching selector (a Sync event) and
// then every change, until ctx ends.
func (c *Client) FollowLeases(ctx context.Context, selector string, fn func(Event[Lease])) error {
	return follow[Lease, *Lease](ctx, c, leases, selector, fn)
}
