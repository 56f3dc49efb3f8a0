package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/kubetest"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// TestClusterNode runs a real sandboxd as a cluster node against a real
// kube-apiserver and etcd: it registers, renews its Lease with its load,
// keeps the phase of the Sandbox resources placed on it equal to its
// sandboxes' statuses, and reads as unavailable within 15 s of a kill -9.
func TestClusterNode(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	cluster := kubetest.Start(t)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{
		"--cluster-kubeconfig", cluster.Kubeconfig, "--node-name", "node-1",
	}})
	kc := cluster.Client(t)
	ctx := ctxT(t, 5*time.Minute)

	t.Run("Registers", func(t *testing.T) {
		n := waitClusterNode(t, kc, "node-1", func(n kube.Node) bool { return n.State == kube.NodeReady })
		if n.Status.URL != d.URL || n.Status.MaxTotal != 10000 {
			t.Fatalf("node-1 reports %+v; want URL %s", n.Status, d.URL)
		}
	})

	t.Run("PhaseFollowsSandbox", func(t *testing.T) {
		// Placed on node-1 as the gateway places it, before the node has it.
		obj, err := kube.NewSandbox("", "placed", "node-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kc.CreateSandbox(ctx, obj); err != nil {
			t.Fatal(err)
		}
		waitPhase(t, kc, "placed", kube.PhasePending)
		sb := d.Client.Sandbox("placed")
		if _, err := sb.Exec(ctx, "true"); err != nil {
			t.Fatal(err)
		}
		waitPhase(t, kc, "placed", "running")
		waitClusterNode(t, kc, "node-1", func(n kube.Node) bool { return n.Status.Running == 1 && n.Status.Total == 1 })
		if _, err := sb.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		waitPhase(t, kc, "placed", "stopped")
		// A sandbox of another node's resource is not this node's to touch.
		other, _ := kube.NewSandbox("", "elsewhere", "node-2", nil)
		if _, err := kc.CreateSandbox(ctx, other); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Client.Sandbox("elsewhere").Exec(ctx, "true"); err != nil {
			t.Fatal(err)
		}
		// Destroyed here: its resource goes.
		if err := sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := kc.GetSandbox(ctx, "placed")
			if errors.Is(err, kube.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the destroyed sandbox's resource is still there: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if got, err := kc.GetSandbox(ctx, "elsewhere"); err != nil || got.Status.Phase != kube.PhasePending {
			t.Fatalf("node-2's resource: %+v, %v; want it untouched", got, err)
		}
		if err := d.Client.Sandbox("elsewhere").Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("KilledNodeUnavailable", func(t *testing.T) {
		d.Kill(t)
		killed := time.Now()
		n, at := waitClusterNodeAt(t, kc, "node-1", func(n kube.Node) bool { return n.State == kube.NodeUnavailable })
		// The state is the one at the time the list was asked for: the
		// lease (10 s, renewed every 3 s) bounds it whatever the load.
		t.Logf("last renewal %s before the kill", killed.Sub(n.RenewTime).Round(time.Millisecond))
		if took := at.Sub(killed); took > 15*time.Second {
			t.Errorf("node-1 read as unavailable %s after kill -9; want within 15 s", took)
		} else {
			t.Logf("node-1 read as unavailable %s after kill -9", took.Round(100*time.Millisecond))
		}
		d.Start(t)
		waitClusterNode(t, kc, "node-1", func(n kube.Node) bool { return n.State == kube.NodeReady })
	})
}

// waitClusterNode lists nodes until name's record satisfies ok (given the
// time the list was asked for).
func waitClusterNode(t *testing.T, c *kube.Client, name string, ok func(kube.Node) bool) kube.Node {
	t.Helper()
	n, _ := waitClusterNodeAt(t, c, name, ok)
	return n
}

// waitClusterNodeAt is waitClusterNode, also returning the time the
// satisfying list was asked for (the time its states are computed at).
func waitClusterNodeAt(t *testing.T, c *kube.Client, name string, ok func(kube.Node) bool) (kube.Node, time.Time) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last kube.Node
	for time.Now().Before(deadline) {
		at := time.Now()
		nodes, err := c.ListNodes(context.Background(), at)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Name == name {
				if last = n; ok(n) {
					return n, at
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("node %s never got there; last %+v", name, last)
	return last, time.Time{}
}

func waitPhase(t *testing.T, c *kube.Client, name, phase string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	got := ""
	for time.Now().Before(deadline) {
		s, err := c.GetSandbox(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got = s.Status.Phase; got == phase {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("Sandbox %s: phase %q, want %q", name, got, phase)
}
