package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// KubeDirectory is the directory of a cluster on Kubernetes
// (internal/kube): a node is its Lease (heartbeat, status annotation,
// cordon), a placement is the sandbox's Sandbox resource, whose create is
// the atomic claim (two gateways creating one name: one gets
// AlreadyExists and reads the winner's node).
type KubeDirectory struct {
	Client *kube.Client
}

var _ Directory = KubeDirectory{}

// Nodes reads every node's Lease.
func (d KubeDirectory) Nodes(ctx context.Context) ([]Node, error) {
	kn, err := d.Client.ListNodes(ctx, time.Now())
	if err != nil {
		return nil, kubeErr(err)
	}
	out := make([]Node, 0, len(kn))
	for _, n := range kn {
		st := n.Status
		out = append(out, Node{
			Name: n.Name, URL: st.URL, Ready: n.State != kube.NodeUnavailable, Cordoned: n.Cordoned,
			Running: st.Running, Total: st.Total, MaxRunning: st.MaxRunning, MaxTotal: st.MaxTotal,
			MemoryBudget: st.MemoryBudget, MemoryUsed: st.MemoryCommitted, DefaultMemory: st.DefaultMemory, ReportedAt: n.RenewTime,
			Labels: st.Labels,
		})
	}
	return out, nil
}

// objectName is the resource name of a scoped sandbox ID ("team-a/demo"
// is team-a.demo).
func objectName(scoped string) string {
	t, id := tenant.Split(scoped)
	return kube.ObjectName(t, id)
}

// Placement reads the sandbox's resource; id is scoped to its tenant.
func (d KubeDirectory) Placement(ctx context.Context, id string) (string, error) {
	sb, err := d.Client.GetSandbox(ctx, objectName(id))
	if errors.Is(err, kube.ErrNotFound) {
		return "", ErrNotPlaced
	}
	if err != nil {
		return "", kubeErr(err)
	}
	if sb.Status.Node == "" {
		return "", ErrNotPlaced
	}
	return sb.Status.Node, nil
}

// Claim creates the sandbox's resource with status.node set; when it
// exists, the node it names wins.
func (d KubeDirectory) Claim(ctx context.Context, id, node string, options []byte) (string, error) {
	var opts json.RawMessage
	if len(options) > 0 && json.Valid(options) {
		opts = options
	}
	t, local := tenant.Split(id)
	sb, err := kube.NewSandbox(t, local, node, opts)
	if err != nil {
		return "", err
	}
	_, err = d.Client.CreateSandbox(ctx, sb)
	if errors.Is(err, kube.ErrAlreadyExists) {
		got, err := d.Placement(ctx, id)
		if err != nil {
			return "", fmt.Errorf("reading the placement that won: %w", err)
		}
		return got, nil
	}
	if err != nil {
		return "", kubeErr(err)
	}
	return node, nil
}

// PlacementsOf returns the nodes of the sandboxes of every tenant whose
// own ID is id (a preview host names no tenant), by the resources' ID
// label.
func (d KubeDirectory) PlacementsOf(ctx context.Context, id string) ([]string, error) {
	list, _, err := d.Client.ListSandboxes(ctx, kube.ListOptions{LabelSelector: kube.LabelID + "=" + id})
	if err != nil {
		return nil, kubeErr(err)
	}
	var nodes []string
	for _, sb := range list {
		if sb.Status.Node != "" && !slices.Contains(nodes, sb.Status.Node) {
			nodes = append(nodes, sb.Status.Node)
		}
	}
	slices.Sort(nodes)
	return nodes, nil
}

// Release does nothing: the node deletes a destroyed sandbox's resource
// itself, with its UID as a precondition, so that it never deletes a
// later claim of the same ID (which a delete from here, racing with
// another gateway's create, could).
func (d KubeDirectory) Release(context.Context, string) error { return nil }

// SetCordoned marks the node's Lease.
func (d KubeDirectory) SetCordoned(ctx context.Context, node string, cordoned bool) error {
	err := d.Client.SetCordoned(ctx, node, cordoned)
	if errors.Is(err, kube.ErrNotFound) || err != nil && kube.ValidateNodeName(node) != nil {
		return fmt.Errorf("%w: %q", ErrNodeNotFound, node)
	}
	return kubeErr(err)
}

// kubeErr marks an error of an API server that cannot serve now as the
// directory's ErrUnavailable (503 CLUSTER_UNAVAILABLE, not a 500).
func kubeErr(err error) error {
	if errors.Is(err, kube.ErrUnavailable) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

// Move changes the resource's status.node and node label with its
// resourceVersion as read: a concurrent change (another gateway's move, a
// destroy and a new claim) makes the update conflict, and nothing moves.
func (d KubeDirectory) Move(ctx context.Context, id, from, to string) error {
	sb, err := d.Client.GetSandbox(ctx, objectName(id))
	if errors.Is(err, kube.ErrNotFound) {
		return ErrNotPlaced
	}
	if err != nil {
		return kubeErr(err)
	}
	if sb.Status.Node != from {
		return fmt.Errorf("%w: %s is placed on %q, not %s", ErrPlacementChanged, id, sb.Status.Node, from)
	}
	sb.Status.Node = to
	if sb.Metadata.Labels == nil {
		sb.Metadata.Labels = map[string]string{}
	}
	sb.Metadata.Labels[kube.LabelNode] = to
	_, err = d.Client.UpdateSandbox(ctx, sb)
	switch {
	case errors.Is(err, kube.ErrConflict):
		return fmt.Errorf("%w: %s changed while it was moved", ErrPlacementChanged, id)
	case errors.Is(err, kube.ErrNotFound):
		return ErrNotPlaced
	}
	return kubeErr(err)
}

// FollowPlacements watches every Sandbox resource; placements are keyed
// by scoped ID, as the gateway looks them up.
func (d KubeDirectory) FollowPlacements(ctx context.Context, fn func(PlacementEvent)) error {
	return d.Client.FollowSandboxes(ctx, "", func(ev kube.Event[kube.Sandbox]) {
		switch ev.Type {
		case kube.Sync:
			all := make(map[string]string, len(ev.Items))
			for _, sb := range ev.Items {
				if sb.Status.Node != "" {
					all[tenant.Scope(sb.Spec.Tenant, sb.Spec.ID)] = sb.Status.Node
				}
			}
			fn(PlacementEvent{Sync: true, All: all})
		case kube.Added, kube.Modified, kube.Deleted:
			sb := ev.Object
			if sb == nil {
				return
			}
			fn(PlacementEvent{ID: tenant.Scope(sb.Spec.Tenant, sb.Spec.ID), Node: sb.Status.Node,
				Deleted: ev.Type == kube.Deleted || sb.Status.Node == ""})
		}
	})
}
