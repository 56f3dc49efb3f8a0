package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// errNoFit: no ready, uncordoned node has room for the sandbox.
var errNoFit = errors.New("no node has room for the sandbox")

// errNoMatch: no node has the labels a create's nodeSelector asks for.
var errNoMatch = errors.New("no node has the labels of the nodeSelector")

// placer chooses nodes for new sandboxes and remembers placements.
//
// A node's counts are as of its last heartbeat, seconds old: a burst of
// creates would all land on the node that looked emptiest. So the placer
// adds the claims this gateway made since each node's report to it.
type placer struct {
	dir Directory
	now func() time.Time

	mu sync.Mutex
	// nodes is the last list of the directory, taken at listed.
	nodes  []Node
	listed time.Time
	// pending are this gateway's claims per node, newest last.
	pending map[string][]claim
	// placed caches placements for placementTTL.
	placed map[string]placement
	// followed are every placement as a watch of the directory reports
	// them (follow), once it has synced; a hit there needs no TTL.
	followed map[string]string
}

type claim struct {
	at     time.Time
	memory int64
}

type placement struct {
	node string
	at   time.Time
}

const (
	// nodesTTL is how stale the node list may be: it bounds the time
	// between a Lease expiring and calls answering NODE_UNAVAILABLE.
	nodesTTL = time.Second
	// placementTTL is how long a placement is believed without asking
	// the directory, when the directory's watch (follow) has not shown
	// it. Without a watch, a sandbox destroyed and created again on
	// another node through another gateway within it still reaches the
	// old node.
	placementTTL = 5 * time.Second
	// maxPlaced bounds the placement cache.
	maxPlaced = 100_000
)

func newPlacer(dir Directory) *placer {
	return &placer{dir: dir, now: time.Now, pending: map[string][]claim{}, placed: map[string]placement{}}
}

// list returns the nodes, from the cache when it is fresh.
func (p *placer) list(ctx context.Context) ([]Node, error) {
	p.mu.Lock()
	if p.nodes != nil && p.now().Sub(p.listed) < nodesTTL {
		defer p.mu.Unlock()
		return p.nodes, nil
	}
	p.mu.Unlock()
	nodes, err := p.dir.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodes, p.listed = nodes, p.now()
	return nodes, nil
}

// node returns the named node.
func (p *placer) node(ctx context.Context, name string) (Node, error) {
	nodes, err := p.list(ctx)
	if err != nil {
		return Node{}, err
	}
	for _, n := range nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return Node{}, fmt.Errorf("%w: %q", ErrNodeNotFound, name)
}

// lookup returns the node sandbox id is placed on, or ErrNotPlaced.
func (p *placer) lookup(ctx context.Context, id string) (string, error) {
	p.mu.Lock()
	if node, ok := p.followed[id]; ok {
		p.mu.Unlock()
		return node, nil
	}
	pl, ok := p.placed[id]
	p.mu.Unlock()
	if ok && p.now().Sub(pl.at) < placementTTL {
		return pl.node, nil
	}
	node, err := p.dir.Placement(ctx, id)
	if err != nil {
		if errors.Is(err, ErrNotPlaced) {
			p.forget(id)
		}
		return "", err
	}
	p.remember(id, node)
	return node, nil
}

// place returns the node of sandbox id, claiming it with options on the
// least loaded node that fits memory bytes (0: the node's default) when
// it has none.
func (p *placer) place(ctx context.Context, id string, memory int64, selector map[string]string, options []byte) (string, error) {
	node, err := p.lookup(ctx, id)
	if !errors.Is(err, ErrNotPlaced) {
		return node, err
	}
	choice, err := p.chooseNode(ctx, memory, selector)
	if err != nil {
		return "", err
	}
	got, err := p.dir.Claim(ctx, id, choice.Name, options)
	if err != nil {
		return "", fmt.Errorf("claiming %s on %s: %w", id, choice.Name, err)
	}
	p.remember(id, got)
	return got, nil
}

// chooseNode picks the node a new sandbox (or one moved by a drain) that
// needs memory bytes (0: the node's default) goes to, among the nodes
// with selector's labels, and counts it there until the node's next
// report; errNoMatch when no node has the labels, errNoFit when none of
// those fits.
func (p *placer) chooseNode(ctx context.Context, memory int64, selector map[string]string) (Node, error) {
	nodes, err := p.list(ctx)
	if err != nil {
		return Node{}, err
	}
	if len(selector) > 0 {
		nodes = slices.DeleteFunc(slices.Clone(nodes), func(n Node) bool { return !api.NodeLabelsMatch(n.Labels, selector) })
		if len(nodes) == 0 {
			return Node{}, errNoMatch
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	choice, ok := p.choose(nodes, memory)
	if !ok {
		return Node{}, errNoFit
	}
	mem := memory
	if mem == 0 {
		mem = choice.DefaultMemory
	}
	p.pending[choice.Name] = append(p.pending[choice.Name], claim{at: p.now(), memory: mem})
	return choice, nil
}

// choose picks the ready, uncordoned node that fits with the fewest
// running sandboxes (then the fewest in all, then by name). It is called
// with p.mu held.
func (p *placer) choose(nodes []Node, memory int64) (Node, bool) {
	var best Node
	var bestRunning, bestTotal int
	found := false
	for _, n := range nodes {
		if !n.Ready || n.Cordoned {
			continue
		}
		running, total, used := p.load(n)
		mem := memory
		if mem == 0 {
			mem = n.DefaultMemory
		}
		if n.MaxRunning > 0 && running >= n.MaxRunning ||
			n.MaxTotal > 0 && total >= n.MaxTotal ||
			n.MemoryBudget > 0 && used+mem > n.MemoryBudget {
			continue
		}
		if !found || running < bestRunning || running == bestRunning && total < bestTotal {
			best, bestRunning, bestTotal, found = n, running, total, true
		}
	}
	return best, found
}

// load is n's report plus this gateway's claims on it since the report;
// older claims are dropped (the report counts them). Called with p.mu
// held.
func (p *placer) load(n Node) (running, total int, memory int64) {
	claims := p.pending[n.Name]
	i := 0
	for i < len(claims) && !claims[i].at.After(n.ReportedAt) {
		i++
	}
	claims = claims[i:]
	if len(claims) == 0 {
		delete(p.pending, n.Name)
	} else {
		p.pending[n.Name] = claims
	}
	memory = n.MemoryUsed
	for _, c := range claims {
		memory += c.memory
	}
	return n.Running + len(claims), n.Total + len(claims), memory
}

func (p *placer) remember(id, node string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.placed) >= maxPlaced {
		// Dropping all is cheap and rare: entries are seconds old anyway.
		clear(p.placed)
	}
	p.placed[id] = placement{node: node, at: p.now()}
}

func (p *placer) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.placed, id)
	delete(p.followed, id)
}

// invalidate makes the next list ask the directory.
func (p *placer) invalidate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nodes = nil
}

// follow keeps p.followed equal to the directory's placements until ctx
// ends. A placement the watch has not shown yet (another gateway's claim
// a moment ago) is a miss there, which lookup answers as before: from the
// TTL cache, else the directory. A change also drops the TTL cache's
// entry, so that a destroy or move through another gateway is seen as
// soon as the watch reports it.
func (p *placer) follow(ctx context.Context, f PlacementFollower) error {
	return f.FollowPlacements(ctx, func(ev PlacementEvent) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch {
		case ev.Sync:
			p.followed = ev.All
			clear(p.placed)
		case p.followed == nil:
		case ev.Deleted:
			delete(p.followed, ev.ID)
			delete(p.placed, ev.ID)
		default:
			p.followed[ev.ID] = ev.Node
			delete(p.placed, ev.ID)
		}
	})
}
