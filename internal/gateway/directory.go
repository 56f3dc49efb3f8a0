package gateway

import (
	"context"
	"errors"
	"time"
)

// Directory is what the gateway needs of the cluster's shared state: the
// nodes and where each sandbox is placed. The Kubernetes implementation
// keeps them as Leases and Sandbox resources; any number of gateways share
// one directory. Sandbox IDs are scoped to their tenant (tenant.Scope:
// "team-a/demo"; the admin namespace's are bare).
type Directory interface {
	// Nodes returns every registered node.
	Nodes(ctx context.Context) ([]Node, error)
	// Placement returns the node sandbox id is placed on, or ErrNotPlaced.
	Placement(ctx context.Context, id string) (string, error)
	// Claim places sandbox id on node unless it is placed already,
	// atomically across gateways, and returns the node it is placed on
	// (another one if another claim came first). options are the create's
	// body (nil for an implicit create), recorded with the placement.
	Claim(ctx context.Context, id, node string, options []byte) (string, error)
	// Release forgets where sandbox id was placed (it was destroyed); a
	// missing placement is not an error.
	Release(ctx context.Context, id string) error
	// SetCordoned marks a node as taking no new sandboxes, or clears the
	// mark; ErrNodeNotFound for an unknown node.
	SetCordoned(ctx context.Context, node string, cordoned bool) error
	// Move places sandbox id on node to instead of from, atomically
	// across gateways: only if it is still placed on from
	// (ErrPlacementChanged otherwise, ErrNotPlaced when it is not
	// placed). It is the moment a drain's move takes effect.
	Move(ctx context.Context, id, from, to string) error
}

// Errors of a Directory.
var (
	ErrNotPlaced    = errors.New("sandbox is not placed on any node")
	ErrNodeNotFound = errors.New("no such node")
	// ErrUnavailable: the directory cannot be read or written now (its
	// store is unreachable or failing); a later try may succeed.
	ErrUnavailable = errors.New("the cluster's directory is unavailable")
	// ErrPlacementChanged: a Move found the sandbox placed elsewhere, or
	// its placement changed while it was being moved.
	ErrPlacementChanged = errors.New("the sandbox's placement changed")
)

// Node is one node as the directory knows it.
type Node struct {
	Name string
	// URL is the base URL of the node's API (http://host:port).
	URL string
	// Ready: its heartbeat is current.
	Ready    bool
	Cordoned bool
	// What the node reported at ReportedAt.
	Running, Total int
	// MaxRunning, MaxTotal: 0 is no limit.
	MaxRunning, MaxTotal int
	// MemoryBudget (0: none) bounds MemoryUsed, the sum of its running
	// sandboxes' memory limits; DefaultMemory is the limit of a sandbox
	// that does not choose one.
	MemoryBudget, MemoryUsed, DefaultMemory int64
	// Labels are the node's --node-label flags (nodeSelector matches).
	Labels     map[string]string
	ReportedAt time.Time
}

// PlacementFollower is a Directory that can tell a gateway of every
// placement change as it happens (KubeDirectory: a watch of the Sandbox
// resources). A gateway that follows one sees a sandbox destroyed or
// moved through another gateway at once, rather than after its
// placement cache's 5 s.
type PlacementFollower interface {
	// FollowPlacements calls fn with every placement (Sync) and then with
	// each change, until ctx ends, resuming by itself after errors.
	FollowPlacements(ctx context.Context, fn func(PlacementEvent)) error
}

// PlacementEvent is one change of the directory's placements.
type PlacementEvent struct {
	// Sync: All holds every placement (sandbox ID to node), replacing
	// what was known.
	Sync bool
	All  map[string]string
	// Otherwise sandbox ID is placed on Node, or no longer placed
	// (Deleted).
	ID, Node string
	Deleted  bool
}
