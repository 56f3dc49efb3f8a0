package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// testClusterTenants is TestCluster's subtest of tenants: a key made
// through one gateway works through the other and on the nodes
// themselves (all read the cluster's keys in Kubernetes), a tenant's
// sandboxes are its own across the cluster, a forged tenant identity is
// refused by the gateway and by a node called directly, and a removed
// key stops working everywhere.
func testClusterTenants(ctx context.Context, t *testing.T, c *testCluster) {
	created, err := c.client.CreateKey(ctx, api.KeyCreateRequest{Name: "team-a", Quotas: api.Quotas{MaxSandboxes: 5}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := c.client.CreateKey(ctx, api.KeyCreateRequest{Name: "team-b"})
	if err != nil {
		t.Fatal(err)
	}
	ta, _ := client.New(c.gateways[1], client.WithToken(created.Key))
	tb, _ := client.New(c.gateways[0], client.WithToken(other.Key))
	res, err := ta.Sandbox("demo").Exec(ctx, "hostname")
	if err != nil || res.Stdout != "demo\n" {
		t.Fatalf("a tenant's exec through the other gateway: %+v %v", res, err)
	}
	info, err := ta.Sandbox("demo").Info(ctx)
	if err != nil || info.Node == "" {
		t.Fatalf("info: %+v %v", info, err)
	}
	if _, err := c.client.Sandbox("demo").Info(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("the admin namespace's demo: %v, want not found (the tenant's is its own)", err)
	}
	if _, err := tb.Sandbox("demo").Info(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("another tenant's view of demo: %v, want not found", err)
	}
	list, err := ta.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "demo" || list[0].Node != info.Node {
		t.Errorf("the tenant's merged list: %+v %v, want its demo only", list, err)
	}
	all, err := c.client.List(ctx)
	found := false
	for _, sb := range all {
		found = found || sb.ID == "demo" && sb.Tenant == "team-a"
	}
	if err != nil || !found {
		t.Errorf("the admin's merged list lacks team-a's demo: %v", err)
	}
	keys, err := c.client.ListKeys(ctx)
	for _, k := range keys {
		if k.Name == "team-a" && (k.Usage.Sandboxes != 1 || k.Quotas.MaxSandboxes != 5) {
			t.Errorf("team-a's key through the gateway: %+v", k)
		}
	}
	if err != nil || len(keys) != 2 {
		t.Errorf("keys: %+v %v", keys, err)
	}

	var node *testdaemon.Daemon
	for i, d := range c.nodes {
		if info.Node == fmt.Sprintf("node-%d", i) {
			node = d
		}
	}
	direct, _ := client.New(node.URL, client.WithToken(created.Key))
	if _, err := direct.Sandbox("demo").Info(ctx); err != nil {
		t.Errorf("the node itself does not take the cluster's key: %v", err)
	}
	// Forged identities: a tenant's key claiming another tenant, and a
	// made-up key, through the gateway and straight to the node.
	for _, base := range []string{c.gateways[0], node.URL} {
		forged, _ := client.New(base, client.WithToken(created.Key), client.WithTenant("team-b"))
		var apiErr *client.Error
		if _, err := forged.Sandbox("demo").Info(ctx); !errors.As(err, &apiErr) || apiErr.Code != api.CodeForbidden {
			t.Errorf("%s: team-a's key acting as team-b: %v, want FORBIDDEN", base, err)
		}
		madeUp, _ := client.New(base, client.WithToken("sbx_"+randomToken(t)))
		if _, err := madeUp.Sandbox("demo").Info(ctx); !errors.Is(err, client.ErrUnauthorized) {
			t.Errorf("%s: a made-up key: %v, want UNAUTHORIZED", base, err)
		}
	}

	// The merged event stream through the gateway: a tenant sees its own
	// sandboxes' events, from whichever node, and never another's.
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	es, err := ta.Events(ectx, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tb.Sandbox("b-evt").Exec(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	if _, err := ta.Sandbox("a-evt").Exec(ctx, "true"); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := es.Next()
		if err != nil {
			t.Fatalf("team-a's merged events ended before a-evt's: %v", err)
		}
		if ev.SandboxID == "b-evt" {
			t.Fatalf("team-a saw team-b's event: %+v", ev)
		}
		if ev.SandboxID == "a-evt" {
			break
		}
	}
	cancel()
	for _, sb := range []*client.Sandbox{ta.Sandbox("a-evt"), tb.Sandbox("b-evt")} {
		if err := sb.Destroy(ctx); err != nil {
			t.Error(err)
		}
	}

	if err := c.client.RemoveKey(ctx, "team-a"); err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{c.gateways[0], c.gateways[1], node.URL} {
		cl, _ := client.New(base, client.WithToken(created.Key))
		waitFor(t, 10*time.Second, func() bool {
			_, err := cl.Sandbox("demo").Info(ctx)
			return errors.Is(err, client.ErrUnauthorized)
		}, "the removed key refused by "+base)
	}
	admin, _ := client.New(c.gateways[0], client.WithToken(c.token), client.WithTenant("team-a"))
	if err := admin.Sandbox("demo").Destroy(ctx); err != nil {
		t.Errorf("an admin acting as team-a destroys its demo: %v", err)
	}
}

// testClusterNodeSelector is TestCluster's subtest of node selectors:
// node-i has --node-label zone=zi.
func testClusterNodeSelector(ctx context.Context, t *testing.T, c *testCluster) {
	nodes, err := c.client.Nodes(ctx)
	if err != nil || len(nodes) != len(c.nodes) || nodes[1].Labels["zone"] != "z1" {
		t.Fatalf("nodes' labels: %+v %v", nodes, err)
	}
	sb, err := c.client.Sandbox("zoned", client.WithOptions(api.SandboxOptions{NodeSelector: map[string]string{"zone": "z1"}})).Ensure(ctx)
	if err != nil || sb.Node != "node-1" {
		t.Fatalf("create with zone=z1: %+v %v, want on node-1", sb, err)
	}
	var apiErr *client.Error
	_, err = c.client.Sandbox("unzoned", client.WithOptions(api.SandboxOptions{NodeSelector: map[string]string{"zone": "nowhere"}})).Ensure(ctx)
	if !errors.As(err, &apiErr) || apiErr.Code != api.CodeNoMatchingNode {
		t.Errorf("create with zone=nowhere: %v, want NO_MATCHING_NODE", err)
	}
	if err := c.client.Sandbox("zoned").Destroy(ctx); err != nil {
		t.Error(err)
	}
}
