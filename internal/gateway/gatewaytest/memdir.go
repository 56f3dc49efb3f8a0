// Package gatewaytest holds a gateway.Directory in memory for tests and
// benchmarks of the gateway that are about forwarding and placement, not
// about the cluster's shared state (which e2e/cluster_test.go covers with
// a real kube-apiserver). It must never be used outside tests: its
// placements live in one process, so two gateways on two of them would
// not agree.
package gatewaytest

import (
	"context"
	"sync"

	"github.com/sandboxd/sandboxd/internal/gateway"
)

// Directory is a gateway.Directory in memory. Claim is atomic, like the
// apiserver's create of a Sandbox resource.
type Directory struct {
	mu     sync.Mutex
	nodes  map[string]*gateway.Node
	placed map[string]string
}

// New returns an empty directory.
func New() *Directory {
	return &Directory{nodes: map[string]*gateway.Node{}, placed: map[string]string{}}
}

// Add registers (or replaces) node n.
func (d *Directory) Add(n gateway.Node) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.nodes[n.Name] = &n
}

// Update changes node name in place.
func (d *Directory) Update(name string, f func(*gateway.Node)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d.nodes[name])
}

// PlacedOn returns the node sandbox id is placed on ("" when none).
func (d *Directory) PlacedOn(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.placed[id]
}

// Placements returns how many sandboxes are placed.
func (d *Directory) Placements() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.placed)
}

// Nodes implements gateway.Directory.
func (d *Directory) Nodes(context.Context) ([]gateway.Node, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]gateway.Node, 0, len(d.nodes))
	for _, n := range d.nodes {
		out = append(out, *n)
	}
	return out, nil
}

// Placement implements gateway.Directory.
func (d *Directory) Placement(_ context.Context, id string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.placed[id]; ok {
		return n, nil
	}
	return "", gateway.ErrNotPlaced
}

// Claim implements gateway.Directory.
func (d *Directory) Claim(_ context.Context, id, node string, _ []byte) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.placed[id]; ok {
		return n, nil
	}
	d.placed[id] = node
	return node, nil
}

// Release implements gateway.Directory.
func (d *Directory) Release(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.placed, id)
	return nil
}

// SetCordoned implements gateway.Directory.
func (d *Directory) SetCordoned(_ context.Context, node string, cordoned bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.nodes[node]
	if !ok {
		return gateway.ErrNodeNotFound
	}
	n.Cordoned = cordoned
	return nil
}

// Move implements gateway.Directory.
func (d *Directory) Move(_ context.Context, id, from, to string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.placed[id]
	if !ok {
		return gateway.ErrNotPlaced
	}
	if n != from {
		return gateway.ErrPlacementChanged
	}
	d.placed[id] = to
	return nil
}
