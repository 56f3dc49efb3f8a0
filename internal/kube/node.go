package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"time"
)

// A node's record is its heartbeat Lease, "sandboxd-node-NAME", labelled
// LabelNode=NAME. The node renews it every RenewInterval and writes its
// capacity and load into the AnnotationStatus annotation in the same
// write; AnnotationCordoned is the operator's (the node keeps it as it
// finds it). A node whose Lease was not renewed for LeaseDuration is
// unavailable.
const (
	LeasePrefix = "sandboxd-node-"
	// AnnotationStatus holds the node's NodeStatus as JSON.
	AnnotationStatus = "sandboxd.dev/node-status"
	// AnnotationCordoned is "true" on a cordoned node: no new sandboxes
	// are placed on it.
	AnnotationCordoned = "sandboxd.dev/cordoned"
	// RenewInterval is how often a node renews its Lease.
	RenewInterval = 3 * time.Second
	// LeaseDuration is how long a Lease holds without renewal: a dead
	// node reads as unavailable at most this long after its last renewal
	// (the issue asks for 15 s).
	LeaseDuration = 10 * time.Second
)

// maxStatusBytes bounds the status annotation a reader accepts.
const maxStatusBytes = 4 << 10

// NodeStatus is what a node reports of itself, for placement and for
// `sandbox node ls`.
type NodeStatus struct {
	// URL is where the gateway reaches the node's API (--node-url).
	URL string `json:"url"`
	// Version is the node's sandboxd version.
	Version string `json:"version,omitempty"`
	// MemoryBudget bounds the sum of running sandboxes' memory limits
	// (bytes; 0: no budget); MemoryCommitted is that sum now.
	MemoryBudget    int64 `json:"memoryBudget"`
	MemoryCommitted int64 `json:"memoryCommitted"`
	// DefaultMemory is the memory limit of a sandbox that does not choose
	// one (--default-memory), for placement.
	DefaultMemory int64 `json:"defaultMemory"`
	// Running and Total count the node's sandboxes (running ones, and all
	// that exist); MaxRunning and MaxTotal bound them (0: no bound).
	Running    int `json:"running"`
	Total      int `json:"total"`
	MaxRunning int `json:"maxRunning"`
	MaxTotal   int `json:"maxTotal"`
	// Labels are the node's --node-label flags (a create's nodeSelector
	// matches them).
	Labels map[string]string `json:"labels,omitempty"`
}

// NodeState is a node's state as the cluster sees it.
type NodeState string

// Node states.
const (
	NodeReady       NodeState = "ready"
	NodeUnavailable NodeState = "unavailable" // its Lease expired
	NodeCordoned    NodeState = "cordoned"    // alive, but takes no new sandboxes
)

// Node is one node as read from its Lease.
type Node struct {
	Name     string     `json:"name"`
	State    NodeState  `json:"state"`
	Cordoned bool       `json:"cordoned"`
	Status   NodeStatus `json:"status"`
	// RenewTime is the Lease's last renewal.
	RenewTime time.Time `json:"renewTime"`
}

// ValidateNodeName checks a node name: a DNS label (it is a label value
// and part of the Lease's name).
func ValidateNodeName(name string) error {
	if name == "" || len(name) > 63 || strings.Contains(name, ".") {
		return fmt.Errorf("node name %q: want a DNS label of 1 to 63 lowercase letters, digits and '-'", name)
	}
	return ValidateName(name)
}

// LeaseName is the name of node's heartbeat Lease.
func LeaseName(node string) string { return LeasePrefix + node }

// NodeFromLease reads a node's record from its Lease at time now. A
// Lease that is not a node's, or whose status is missing or malformed,
// is an error.
func NodeFromLease(l *Lease, now time.Time) (Node, error) {
	name := l.Metadata.Labels[LabelNode]
	if ValidateNodeName(name) != nil || l.Metadata.Name != LeaseName(name) {
		return Node{}, fmt.Errorf("lease %q is not a sandboxd node's", l.Metadata.Name)
	}
	n := Node{Name: name, Cordoned: l.Metadata.Annotations[AnnotationCordoned] == "true"}
	raw := l.Metadata.Annotations[AnnotationStatus]
	if len(raw) > maxStatusBytes {
		return Node{}, fmt.Errorf("node %s: status annotation larger than %d bytes", name, maxStatusBytes)
	}
	if err := json.Unmarshal([]byte(raw), &n.Status); err != nil {
		return Node{}, fmt.Errorf("node %s: status annotation: %w", name, err)
	}
	if err := validateNodeURL(n.Status.URL); err != nil {
		return Node{}, fmt.Errorf("node %s: %w", name, err)
	}
	dur := LeaseDuration
	if d := l.Spec.LeaseDurationSeconds; d != nil && *d > 0 {
		dur = time.Duration(*d) * time.Second
	}
	if l.Spec.RenewTime != nil {
		n.RenewTime = l.Spec.RenewTime.Time
	}
	switch {
	case n.RenewTime.IsZero() || now.Sub(n.RenewTime) > dur:
		n.State = NodeUnavailable
	case n.Cordoned:
		n.State = NodeCordoned
	default:
		n.State = NodeReady
	}
	return n, nil
}

// validateNodeURL checks an advertised node URL: http or https, a host,
// nothing else.
func validateNodeURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("node URL %q: want http(s)://HOST:PORT", s)
	}
	return nil
}

// ValidateNodeURL checks the URL a node advertises (--node-url).
func ValidateNodeURL(s string) error { return validateNodeURL(s) }

// ListNodes reads every node's record at time now, ordered by name.
// Leases labelled as nodes' that do not parse are left out.
func (c *Client) ListNodes(ctx context.Context, now time.Time) ([]Node, error) {
	ls, _, err := c.ListLeases(ctx, ListOptions{LabelSelector: LabelNode})
	if err != nil {
		return nil, err
	}
	nodes := make([]Node, 0, len(ls))
	for i := range ls {
		if n, err := NodeFromLease(&ls[i], now); err == nil {
			nodes = append(nodes, n)
		}
	}
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return nodes, nil
}

// SetCordoned cordons (or uncordons) node: placement skips a cordoned
// node. ErrNotFound when no such node registered.
func (c *Client) SetCordoned(ctx context.Context, node string, cordoned bool) error {
	if err := ValidateNodeName(node); err != nil {
		return err
	}
	return retryConflict(ctx, func() error {
		l, err := c.GetLease(ctx, LeaseName(node))
		if err != nil {
			return err
		}
		if l.Metadata.Annotations == nil {
			l.Metadata.Annotations = map[string]string{}
		}
		if cordoned {
			l.Metadata.Annotations[AnnotationCordoned] = "true"
		} else {
			delete(l.Metadata.Annotations, AnnotationCordoned)
		}
		_, err = c.UpdateLease(ctx, l)
		return err
	})
}

// retryConflict runs fn (a read, change and write) again while it fails
// with ErrConflict, a few times.
func retryConflict(ctx context.Context, fn func() error) error {
	var err error
	for range 8 {
		if err = fn(); !errors.Is(err, ErrConflict) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return err
}

// Heartbeat registers a node and renews its Lease until its context ends.
type Heartbeat struct {
	Client *Client
	// Name is the node's name; Status is called before each renewal for
	// what the node reports.
	Name   string
	Status func() NodeStatus
	Log    *slog.Logger
	// Interval and Duration override RenewInterval and LeaseDuration
	// (tests).
	Interval, Duration time.Duration

	// last is the Lease as last written (Run's goroutine only).
	last *Lease
}

// Renew registers the node or renews its Lease once: a node calls it at
// start, so that a bad configuration shows before it serves.
func (h *Heartbeat) Renew(ctx context.Context) error {
	if err := ValidateNodeName(h.Name); err != nil {
		return err
	}
	if err := h.renew(ctx, h.duration()); err != nil {
		return fmt.Errorf("registering node %s: %w", h.Name, err)
	}
	return nil
}

func (h *Heartbeat) duration() time.Duration {
	if h.Duration > 0 {
		return h.Duration
	}
	return LeaseDuration
}

// Run renews the Lease every Interval until ctx ends. A failed renewal is
// logged (once until one works again) and tried again at the next tick:
// the node goes on serving its sandboxes while the API is away, and the
// cluster sees it unavailable meanwhile. Run and Renew must not be called
// at the same time.
func (h *Heartbeat) Run(ctx context.Context) {
	interval := h.Interval
	if interval <= 0 {
		interval = RenewInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		err := h.renew(ctx, h.duration())
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			h.Log.Warn("renewing the node's lease", "node", h.Name, "err", err)
			failing = true
		case err == nil && failing:
			h.Log.Info("renewing the node's lease works again", "node", h.Name)
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renew updates the Lease with the node's status (from the last copy it
// wrote; read again after a conflict, keeping what others wrote, such as
// the cordon annotation), creating it when missing.
func (h *Heartbeat) renew(ctx context.Context, duration time.Duration) error {
	st, err := json.Marshal(h.Status())
	if err != nil {
		return err
	}
	secs := int32(duration / time.Second)
	holder := h.Name
	return retryConflict(ctx, func() error {
		now := &MicroTime{time.Now()}
		l := h.last
		if l == nil {
			var err error
			l, err = h.Client.GetLease(ctx, LeaseName(h.Name))
			if errors.Is(err, ErrNotFound) {
				return h.create(ctx, string(st), secs, now)
			}
			if err != nil {
				return err
			}
		}
		if l.Metadata.Labels == nil {
			l.Metadata.Labels = map[string]string{}
		}
		if l.Metadata.Annotations == nil {
			l.Metadata.Annotations = map[string]string{}
		}
		l.Metadata.Labels[LabelNode] = h.Name
		l.Metadata.Annotations[AnnotationStatus] = string(st)
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, &secs, now
		out, err := h.Client.UpdateLease(ctx, l)
		if err != nil {
			h.last = nil // read it again next time
			return err
		}
		h.last = out
		return nil
	})
}

// create registers the node's Lease.
func (h *Heartbeat) create(ctx context.Context, st string, secs int32, now *MicroTime) error {
	holder := h.Name
	l := &Lease{
		Metadata: ObjectMeta{Name: LeaseName(h.Name), Labels: map[string]string{LabelNode: h.Name},
			Annotations: map[string]string{AnnotationStatus: st}},
		Spec: LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, AcquireTime: now, RenewTime: now},
	}
	out, err := h.Client.CreateLease(ctx, l)
	if errors.Is(err, ErrAlreadyExists) {
		// Created meanwhile: a conflict, so that the retry reads it.
		return &APIError{StatusCode: 409, Reason: "Conflict", Message: "the lease was created meanwhile"}
	}
	if err == nil {
		h.last = out
	}
	return err
}
