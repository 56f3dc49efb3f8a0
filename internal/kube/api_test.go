package kube_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/kubetest"
)

// TestAPI runs the client against a real kube-apiserver and etcd, one
// cluster shared by the subtests.
func TestAPI(t *testing.T) {
	cluster := kubetest.Start(t)
	ctx := context.Background()

	t.Run("Kubeconfig", func(t *testing.T) {
		cfg, err := kube.LoadKubeconfig(cluster.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		c, err := kube.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c.Namespace() != kube.DefaultNamespace {
			t.Errorf("namespace = %q", c.Namespace())
		}
		if _, _, err := c.ListSandboxes(ctx, kube.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		bad := *cfg
		bad.Token = "wrong"
		c, _ = kube.New(&bad)
		if _, _, err := c.ListSandboxes(ctx, kube.ListOptions{}); !errors.Is(err, kube.ErrUnauthorized) {
			t.Errorf("a wrong token: %v, want ErrUnauthorized", err)
		}
	})

	c := cluster.Client(t)

	t.Run("SandboxConflicts", func(t *testing.T) {
		opts := json.RawMessage(`{"memory":"512Mi"}`)
		s, err := kube.NewSandbox("acme", "conflicts", "node-a", opts)
		if err != nil {
			t.Fatal(err)
		}
		created, err := c.CreateSandbox(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if created.Metadata.Name != "acme.conflicts" || created.Metadata.ResourceVersion == "" || created.Status.Node != "node-a" {
			t.Fatalf("created %+v", created)
		}
		// The second claim of one ID loses.
		again, _ := kube.NewSandbox("acme", "conflicts", "node-b", nil)
		if _, err := c.CreateSandbox(ctx, again); !errors.Is(err, kube.ErrAlreadyExists) || errors.Is(err, kube.ErrConflict) {
			t.Fatalf("second create: %v, want ErrAlreadyExists", err)
		}
		got, err := c.GetSandbox(ctx, "acme.conflicts")
		if err != nil || string(got.Spec.Options) != `{"memory":"512Mi"}` || got.Spec.Tenant != "acme" {
			t.Fatalf("get: %+v, %v", got, err)
		}
		// Two writers from one version: the second conflicts.
		first, second := *got, *got
		first.Status.Phase = "running"
		updated, err := c.UpdateSandbox(ctx, &first)
		if err != nil {
			t.Fatal(err)
		}
		second.Status.Phase = "stopped"
		if _, err := c.UpdateSandbox(ctx, &second); !errors.Is(err, kube.ErrConflict) {
			t.Fatalf("stale update: %v, want ErrConflict", err)
		}
		// A delete of a version that is gone conflicts too.
		if err := c.DeleteSandbox(ctx, "acme.conflicts", kube.Preconditions{ResourceVersion: got.Metadata.ResourceVersion}); !errors.Is(err, kube.ErrConflict) {
			t.Fatalf("stale delete: %v, want ErrConflict", err)
		}
		if err := c.DeleteSandbox(ctx, "acme.conflicts", kube.Preconditions{UID: updated.Metadata.UID}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetSandbox(ctx, "acme.conflicts"); !errors.Is(err, kube.ErrNotFound) {
			t.Fatalf("get after delete: %v, want ErrNotFound", err)
		}
		if _, err := c.GetSandbox(ctx, "../x"); err == nil {
			t.Fatal("a name with a slash was sent")
		}
	})

	t.Run("ListSelectors", func(t *testing.T) {
		for _, n := range []struct{ id, node string }{{"l1", "node-l"}, {"l2", "node-l"}, {"l3", "node-m"}} {
			s, _ := kube.NewSandbox("", n.id, n.node, nil)
			if _, err := c.CreateSandbox(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		items, rv, err := c.ListSandboxes(ctx, kube.ListOptions{LabelSelector: kube.LabelNode + "=node-l"})
		if err != nil || rv == "" {
			t.Fatal(rv, err)
		}
		if len(items) != 2 || items[0].Spec.ID != "l1" || items[1].Spec.ID != "l2" {
			t.Fatalf("node-l's sandboxes: %+v", items)
		}
	})

	t.Run("Watch", func(t *testing.T) {
		sel := kube.LabelNode + "=node-w"
		_, rv, err := c.ListSandboxes(ctx, kube.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		w, err := c.WatchSandboxes(ctx, kube.ListOptions{LabelSelector: sel, ResourceVersion: rv})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := kube.NewSandbox("", "w1", "node-w", nil)
		s, err = c.CreateSandbox(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		ev := next(t, w)
		if ev.Type != kube.Added || ev.Object.Spec.ID != "w1" {
			t.Fatalf("first event %s %+v", ev.Type, ev.Object)
		}
		w.Stop()
		// Changes made while nobody watches arrive when the watch resumes
		// from the last version seen.
		s.Status.Phase = "running"
		if _, err := c.UpdateSandbox(ctx, s); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteSandbox(ctx, "w1", kube.Preconditions{}); err != nil {
			t.Fatal(err)
		}
		w, err = c.WatchSandboxes(ctx, kube.ListOptions{LabelSelector: sel, ResourceVersion: ev.Object.Metadata.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		if ev := next(t, w); ev.Type != kube.Modified || ev.Object.Status.Phase != "running" {
			t.Fatalf("resumed: %s %+v", ev.Type, ev.Object.Status)
		}
		if ev := next(t, w); ev.Type != kube.Deleted || ev.Object.Spec.ID != "w1" {
			t.Fatalf("resumed: %s %+v", ev.Type, ev.Object)
		}
	})

	t.Run("Follow", func(t *testing.T) {
		sel := kube.LabelNode + "=node-f"
		s, _ := kube.NewSandbox("", "f1", "node-f", nil)
		if _, err := c.CreateSandbox(ctx, s); err != nil {
			t.Fatal(err)
		}
		fctx, cancel := context.WithCancel(ctx)
		events := make(chan kube.Event[kube.Sandbox], 16)
		done := make(chan error, 1)
		go func() { done <- c.FollowSandboxes(fctx, sel, func(ev kube.Event[kube.Sandbox]) { events <- ev }) }()
		defer func() {
			cancel()
			<-done
		}()
		ev := recv(t, events)
		if ev.Type != kube.Sync || len(ev.Items) != 1 || ev.Items[0].Spec.ID != "f1" {
			t.Fatalf("first: %s %+v", ev.Type, ev.Items)
		}
		s2, _ := kube.NewSandbox("", "f2", "node-f", nil)
		if _, err := c.CreateSandbox(ctx, s2); err != nil {
			t.Fatal(err)
		}
		if ev := recv(t, events); ev.Type != kube.Added || ev.Object.Spec.ID != "f2" {
			t.Fatalf("then: %s %+v", ev.Type, ev.Object)
		}
	})

	t.Run("Lease", func(t *testing.T) {
		holder, secs := "me", int32(10)
		l := &kube.Lease{Metadata: kube.ObjectMeta{Name: "plain"}, Spec: kube.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &kube.MicroTime{Time: time.Now()}}}
		created, err := c.CreateLease(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CreateLease(ctx, l); !errors.Is(err, kube.ErrAlreadyExists) {
			t.Fatalf("second create: %v", err)
		}
		a, b := *created, *created
		a.Spec.RenewTime = &kube.MicroTime{Time: time.Now()}
		if _, err := c.UpdateLease(ctx, &a); err != nil {
			t.Fatal(err)
		}
		if _, err := c.UpdateLease(ctx, &b); !errors.Is(err, kube.ErrConflict) {
			t.Fatalf("stale update: %v, want ErrConflict", err)
		}
		got, err := c.GetLease(ctx, "plain")
		if err != nil || *got.Spec.HolderIdentity != "me" || got.Spec.RenewTime.Sub(a.Spec.RenewTime.Time).Abs() > time.Millisecond {
			t.Fatalf("get: %+v, %v", got, err)
		}
	})

	t.Run("Heartbeat", func(t *testing.T) {
		var mu sync.Mutex
		running := 1
		hb := &kube.Heartbeat{
			Client: c, Name: "hb", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Interval: 200 * time.Millisecond, Duration: 2 * time.Second,
			Status: func() kube.NodeStatus {
				mu.Lock()
				defer mu.Unlock()
				return kube.NodeStatus{URL: "http://127.0.0.1:7070", Running: running, Total: 3, MemoryBudget: 8 << 30}
			},
		}
		hctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		if err := hb.Renew(ctx); err != nil {
			t.Fatal(err)
		}
		go func() {
			hb.Run(hctx)
			close(done)
		}()
		stopHeartbeat := sync.OnceFunc(func() {
			stop()
			<-done
		})
		defer stopHeartbeat()
		n := waitNode(t, c, "hb", func(n kube.Node) bool { return n.State == kube.NodeReady })
		if n.Status.URL != "http://127.0.0.1:7070" || n.Status.Total != 3 || n.Status.MemoryBudget != 8<<30 {
			t.Fatalf("node %+v", n)
		}
		// Renewals carry the load along.
		mu.Lock()
		running = 2
		mu.Unlock()
		first := n.RenewTime
		n = waitNode(t, c, "hb", func(n kube.Node) bool { return n.Status.Running == 2 && n.RenewTime.After(first) })
		// A cordon survives the node's renewals.
		if err := c.SetCordoned(ctx, "hb", true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(600 * time.Millisecond) // several renewals
		n = waitNode(t, c, "hb", func(n kube.Node) bool { return n.State == kube.NodeCordoned })
		if err := c.SetCordoned(ctx, "hb", false); err != nil {
			t.Fatal(err)
		}
		waitNode(t, c, "hb", func(n kube.Node) bool { return n.State == kube.NodeReady && !n.Cordoned })
		// A node that stops renewing reads as unavailable once its lease
		// duration has passed.
		stopHeartbeat()
		waitNode(t, c, "hb", func(n kube.Node) bool { return n.State == kube.NodeUnavailable })
		if err := c.SetCordoned(ctx, "nobody", true); !errors.Is(err, kube.ErrNotFound) {
			t.Fatalf("cordon of an unknown node: %v", err)
		}
	})
}

func next(t *testing.T, w *kube.Watch[kube.Sandbox]) kube.Event[kube.Sandbox] {
	t.Helper()
	ev, err := w.Next()
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func recv(t *testing.T, c <-chan kube.Event[kube.Sandbox]) kube.Event[kube.Sandbox] {
	t.Helper()
	select {
	case ev := <-c:
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event in 30 s")
	}
	return kube.Event[kube.Sandbox]{}
}

// waitNode polls the node list until name's record satisfies ok.
func waitNode(t *testing.T, c *kube.Client, name string, ok func(kube.Node) bool) kube.Node {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last kube.Node
	for time.Now().Before(deadline) {
		nodes, err := c.ListNodes(context.Background(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Name == name {
				if last = n; ok(n) {
					return n
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("node %s never got there; last %+v", name, last)
	return last
}
