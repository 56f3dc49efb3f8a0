// Package kubenode is the node side of a sandboxd cluster (docs/cluster.md):
// it registers the daemon as a node, renews its Lease with its capacity
// and load, and keeps the phase of the Sandbox resources placed on it
// (status.node == its name) equal to its sandboxes' statuses. It reads the
// sandbox manager and writes only the Kubernetes API; it never starts,
// stops or creates a sandbox.
package kubenode

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Sandboxes is what the node reads of the sandbox manager.
type Sandboxes interface {
	Get(ctx context.Context, id string) (sandbox.Info, error)
	List(ctx context.Context) ([]sandbox.Info, error)
	Events() *sandbox.Events
}

// Options configure a node.
type Options struct {
	Client *kube.Client
	// Name is the node's name (a DNS label); URL where the gateway
	// reaches its API.
	Name, URL, Version string
	Sandboxes          Sandboxes
	// Moves serves moves of sandboxes to and from other nodes (move.go).
	Moves    Mover
	Capacity sandbox.Capacity
	// DefaultMemory is the memory limit of sandboxes that do not choose.
	DefaultMemory int64
	// Labels are published with the node's status (--node-label).
	Labels map[string]string
	Log    *slog.Logger
	// TLS configures calls to other nodes (their API's certificates);
	// nil: the system's roots.
	TLS *tls.Config
	// RenewInterval and LeaseDuration override kube's defaults (tests).
	RenewInterval, LeaseDuration time.Duration
}

// Node is a registered node.
type Node struct {
	o  Options
	hb *kube.Heartbeat
	// http fetches moving sandboxes from other nodes.
	http *http.Client

	// mu guards objs (the Sandboxes placed on this node, by object
	// name, as last seen), dirty (names whose phase is to be checked)
	// and destroyed (a sandbox of that name destroyed here).
	mu        sync.Mutex
	objs      map[string]kube.Sandbox
	dirty     map[string]struct{}
	destroyed map[string]destroyal
	wake      chan struct{}
}

// Register checks the options and registers the node (its Lease), so
// that a daemon with a bad cluster configuration fails at start.
func Register(ctx context.Context, o Options) (*Node, error) {
	if err := kube.ValidateNodeName(o.Name); err != nil {
		return nil, err
	}
	if err := kube.ValidateNodeURL(o.URL); err != nil {
		return nil, err
	}
	n := &Node{
		o: o, objs: map[string]kube.Sandbox{}, dirty: map[string]struct{}{},
		destroyed: map[string]destroyal{}, wake: make(chan struct{}, 1),
		http: &http.Client{Transport: &http.Transport{
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext, ResponseHeaderTimeout: time.Minute,
			TLSClientConfig: o.TLS,
		}},
	}
	n.hb = &kube.Heartbeat{
		Client: o.Client, Name: o.Name, Status: n.status, Log: o.Log,
		Interval: o.RenewInterval, Duration: o.LeaseDuration,
	}
	if err := n.hb.Renew(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// Run renews the Lease and keeps the phases current until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	sub := n.o.Sandboxes.Events().Subscribe()
	var wg sync.WaitGroup
	wg.Go(func() { n.hb.Run(ctx) })
	wg.Go(func() {
		n.o.Client.FollowSandboxes(ctx, kube.LabelNode+"="+n.o.Name, n.observe)
	})
	wg.Go(func() { n.reconcileLoop(ctx) })
	n.events(ctx, sub)
	wg.Wait()
	return nil
}

// status is what the node reports with each renewal.
func (n *Node) status() kube.NodeStatus {
	st := kube.NodeStatus{
		URL: n.o.URL, Version: n.o.Version, MemoryBudget: n.o.Capacity.MemoryBudget,
		MaxRunning: n.o.Capacity.MaxRunning, MaxTotal: n.o.Capacity.MaxTotal, DefaultMemory: n.o.DefaultMemory,
		Labels: n.o.Labels,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	infos, err := n.o.Sandboxes.List(ctx)
	if err != nil {
		return st
	}
	st.Total = len(infos)
	for _, inf := range infos {
		if inf.Status == sandbox.StatusRunning || inf.Status == sandbox.StatusCreating {
			st.Running++
			st.MemoryCommitted += inf.Config.Limits.MemoryBytes
		}
	}
	return st
}

// observe records what the watch of this node's Sandboxes saw.
func (n *Node) observe(ev kube.Event[kube.Sandbox]) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch ev.Type {
	case kube.Sync:
		clear(n.objs)
		for _, s := range ev.Items {
			n.objs[s.Metadata.Name] = s
			n.dirty[s.Metadata.Name] = struct{}{}
		}
	case kube.Added, kube.Modified:
		n.objs[ev.Object.Metadata.Name] = *ev.Object
		n.dirty[ev.Object.Metadata.Name] = struct{}{}
	case kube.Deleted:
		delete(n.objs, ev.Object.Metadata.Name)
	}
	n.poke()
}

// events marks the Sandbox of each lifecycle event dirty; when the
// subscription is dropped for falling behind, it subscribes again and
// marks every one dirty.
func (n *Node) events(ctx context.Context, sub *sandbox.Subscription) {
	defer func() { sub.Cancel() }()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-sub.C:
			if !ok {
				sub = n.o.Sandboxes.Events().Subscribe()
				n.markAll()
				continue
			}
			t, id := tenant.Split(ev.SandboxID)
			name := kube.ObjectName(t, id)
			n.mu.Lock()
			if ev.Type == sandbox.EventDestroyed {
				n.destroyed[name] = destroyal{at: ev.Time, uid: n.objs[name].Metadata.UID}
			}
			n.dirty[name] = struct{}{}
			n.poke()
			n.mu.Unlock()
		}
	}
}

func (n *Node) markAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name := range n.objs {
		n.dirty[name] = struct{}{}
	}
	n.poke()
}

// poke wakes the reconciler (n.mu held).
func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// reconcileLoop brings the dirty Sandboxes' phases up to date, and every
// minute all of them (a write that failed is tried again then).
func (n *Node) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.markAll()
		case <-n.wake:
		}
		n.mu.Lock()
		names := make([]string, 0, len(n.dirty))
		for name := range n.dirty {
			names = append(names, name)
		}
		clear(n.dirty)
		n.mu.Unlock()
		for _, name := range names {
			if err := n.reconcile(ctx, name); err != nil && ctx.Err() == nil {
				n.o.Log.Warn("updating a Sandbox resource's phase", "sandbox", name, "err", err)
			}
		}
	}
}

// destroyal is a sandbox destroyed here: when, and the UID of its
// resource as this node saw it then ("" when it had not seen it yet).
type destroyal struct {
	at  time.Time
	uid string
}

// ends reports whether the destroy ended the sandbox that obj places here,
// rather than an older one of the same name. The UID seen at the destroy
// says so exactly; without one, a resource made no later than the destroy
// is the destroyed sandbox's. Creation times count whole seconds, so
// compare them with the destroy's second: a sandbox created and destroyed
// within one second is still its resource's.
func (d destroyal) ends(obj kube.Sandbox) bool {
	if d.uid != "" {
		return obj.Metadata.UID == d.uid
	}
	created := obj.Metadata.CreationTimestamp
	return created != nil && !created.After(d.at.Truncate(time.Second))
}

// reconcile sets one Sandbox's phase to its sandbox's status here:
// pending when this node does not have it, and deletes the resource when
// the sandbox was destroyed here after the resource was made.
func (n *Node) reconcile(ctx context.Context, name string) error {
	n.mu.Lock()
	obj, ok := n.objs[name]
	destroyed, wasDestroyed := n.destroyed[name]
	delete(n.destroyed, name)
	n.mu.Unlock()
	if !ok {
		return nil // not placed here (or not seen yet: its Added marks it again)
	}
	phase := kube.PhasePending
	inf, err := n.o.Sandboxes.Get(ctx, tenant.Scope(obj.Spec.Tenant, obj.Spec.ID))
	switch {
	case err == nil:
		phase = string(inf.Status)
	case !errors.Is(err, sandbox.ErrNotFound):
		return err
	case wasDestroyed && destroyed.ends(obj):
		return n.deleteDestroyed(ctx, name, obj)
	}
	if obj.Status.Phase == phase {
		return nil
	}
	obj.Status.Phase = phase
	out, err := n.o.Client.UpdateSandbox(ctx, &obj)
	switch {
	case errors.Is(err, kube.ErrConflict):
		// Changed meanwhile: its watch event marks it dirty again.
		return nil
	case errors.Is(err, kube.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	n.mu.Lock()
	if cur, ok := n.objs[name]; ok && cur.Metadata.UID == out.Metadata.UID {
		n.objs[name] = *out
	}
	n.mu.Unlock()
	return nil
}

// deleteDestroyed deletes the resource of a sandbox destroyed here, as
// last seen (obj), unless it is a newer one (another UID) or no longer
// names this node: a drain moves a sandbox by changing its resource's
// node, then destroys the copy here, and this node's view of the resource
// may not have caught up yet. The resourceVersion precondition catches
// that; a resource changed otherwise (a phase) is read again once.
func (n *Node) deleteDestroyed(ctx context.Context, name string, obj kube.Sandbox) error {
	for range 2 {
		err := n.o.Client.DeleteSandbox(ctx, name, kube.Preconditions{UID: obj.Metadata.UID, ResourceVersion: obj.Metadata.ResourceVersion})
		if errors.Is(err, kube.ErrNotFound) {
			return nil
		}
		if !errors.Is(err, kube.ErrConflict) {
			return err
		}
		cur, err := n.o.Client.GetSandbox(ctx, name)
		if errors.Is(err, kube.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Metadata.UID != obj.Metadata.UID || cur.Status.Node != n.o.Name {
			return nil
		}
		obj = *cur
	}
	return nil
}
