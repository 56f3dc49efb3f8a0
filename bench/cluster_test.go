package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/kubetest"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// benchCluster is a real cluster on this machine: kube-apiserver and etcd
// (kubetest), three sandboxd nodes and one `sandboxd gateway` process.
type benchCluster struct {
	nodes   []*testdaemon.Daemon
	gwAddr  string
	gateway *client.Client
}

func startBenchCluster(b *testing.B, n int) *benchCluster {
	b.Helper()
	kc := kubetest.Start(b)
	const token = "bench-cluster-token-0123456789abcdef"
	c := &benchCluster{gwAddr: testdaemon.FreeAddr(b)}
	_, gwPort, _ := net.SplitHostPort(c.gwAddr)
	for i := range n {
		c.nodes = append(c.nodes, testdaemon.Start(b, testdaemon.Options{Token: token, Args: []string{
			"--cluster-kubeconfig", kc.Kubeconfig, "--node-name", fmt.Sprintf("node-%d", i),
			"--preview-port", gwPort, "--default-memory", "256Mi", "--log-level", "info",
		}}))
	}
	tokenFile := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	testdaemon.StartGateway(b, kc.Kubeconfig, tokenFile, c.gwAddr)
	var err error
	if c.gateway, err = client.New("http://"+c.gwAddr, client.WithToken(token)); err != nil {
		b.Fatal(err)
	}
	c.waitNodes(b, n)
	return c
}

// waitNodes waits until n nodes are ready and not cordoned.
func (c *benchCluster) waitNodes(b *testing.B, n int) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		nodes, err := c.gateway.Nodes(context.Background())
		ready := 0
		for _, nd := range nodes {
			if nd.State == api.NodeReady {
				ready++
			}
		}
		if err == nil && ready == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d nodes ready: %+v %v", ready, n, nodes, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkCluster measures a real three-node cluster on one machine
// through its gateway: creates per second with three nodes open beside one
// (the other two cordoned), rounds interleaved; preview throughput through
// the gateway beside the same preview host sent straight to its node
// (small and 1 MiB answers, as BenchmarkPreview); and the time from a
// node's kill -9 to NODE_UNAVAILABLE, for a call to one of its sandboxes
// and for the node's state (its Lease expired). The nodes share the
// machine's CPUs, so three nodes cannot create faster than one here for
// lack of cores: the ratio shows what placement and the gateway cost and
// that creates spread, not the scale-out of separate hosts.
func BenchmarkCluster(b *testing.B) {
	once(b, func(b *testing.B) {
		c := startBenchCluster(b, 3)
		benchClusterCreates(b, c)
		benchClusterPreview(b, c)
		benchNodeDeath(b, c)
	})
}

// benchClusterCreates runs BENCH_ROUNDS rounds (default 3); each creates
// BENCH_CREATES sandboxes (default 12, 6 at a time) with three nodes open
// and as many with one, in alternating order, and destroys them unmeasured.
func benchClusterCreates(b *testing.B, c *benchCluster) {
	ctx := ctxFor(b)
	rounds, batch := envInt("BENCH_ROUNDS", 3), envInt("BENCH_CREATES", 12)
	var took [2]time.Duration // [one node, three nodes]
	spread := map[string]bool{}
	for r := range rounds {
		for k := range 2 {
			three := (r+k)%2 == 1
			c.setOpen(b, three)
			ids := make([]string, batch)
			for i := range ids {
				ids[i] = fmt.Sprintf("c%d-%d-%d", r, k, i)
			}
			start := time.Now()
			nodes := c.createAll(b, ids, 6)
			idx := 0
			if three {
				idx = 1
				for _, n := range nodes {
					spread[n] = true
				}
			}
			took[idx] += time.Since(start)
			for _, id := range ids {
				if err := c.gateway.Sandbox(id).Destroy(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	c.setOpen(b, true)
	one := float64(rounds*batch) / took[0].Seconds()
	three := float64(rounds*batch) / took[1].Seconds()
	b.ReportMetric(one, "creates/s-1-node")
	b.ReportMetric(three, "creates/s-3-nodes")
	b.Logf("creates through the gateway, %d rounds of %d (6 at a time): one node %.2f/s, three nodes %.2f/s (%.0f%%), three-node creates landed on %d nodes",
		rounds, batch, one, three, 100*three/one, len(spread))
	fmt.Printf("BenchmarkCluster creates: one node %.2f/s, three nodes %.2f/s (x%.2f); the three-node batches landed on %d nodes\n",
		one, three, three/one, len(spread))
}

// setOpen cordons node-1 and node-2 (one node open) or uncordons them, and
// waits until the gateway's node list says so.
func (c *benchCluster) setOpen(b *testing.B, three bool) {
	b.Helper()
	ctx := ctxFor(b)
	for _, name := range []string{"node-1", "node-2"} {
		var err error
		if three {
			_, err = c.gateway.UncordonNode(ctx, name)
		} else {
			_, err = c.gateway.DrainNode(ctx, name)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	want := api.NodeCordoned
	if three {
		want = api.NodeReady
	}
	for {
		nodes, err := c.gateway.Nodes(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ok := 0
		for _, nd := range nodes {
			if (nd.Name == "node-1" || nd.Name == "node-2") && nd.State == want {
				ok++
			}
		}
		if ok == 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The gateway's placement reads a node list up to 1 s old.
	time.Sleep(1100 * time.Millisecond)
}

// createAll creates ids through the gateway, workers at a time, and
// returns the nodes they landed on.
func (c *benchCluster) createAll(b *testing.B, ids []string, workers int) []string {
	ctx := ctxFor(b)
	work := make(chan string)
	var mu sync.Mutex
	var nodes []string
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for id := range work {
				sb, err := c.gateway.Sandbox(id).Ensure(ctx)
				if err != nil {
					b.Errorf("create %s: %v", id, err)
					continue
				}
				mu.Lock()
				nodes = append(nodes, sb.Node)
				mu.Unlock()
			}
		})
	}
	for _, id := range ids {
		work <- id
	}
	close(work)
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return nodes
}

// benchClusterPreview measures one sandbox's preview host through the
// gateway beside the same requests sent straight to its node, interleaved
// in quarter-second turns (BENCH_SECONDS each, default 5).
func benchClusterPreview(b *testing.B, c *benchCluster) {
	ctx := ctxFor(b)
	sb := c.gateway.Sandbox("bench-preview")
	info, err := sb.Ensure(ctx)
	if err != nil {
		b.Fatal(err)
	}
	testdaemon.StartTestServer(b, sb, "0.0.0.0:8080")
	p, err := sb.ExposePort(ctx, 8080)
	if err != nil {
		b.Fatal(err)
	}
	var nodeAddr string
	for i, d := range c.nodes {
		if info.Node == fmt.Sprintf("node-%d", i) {
			nodeAddr = strings.TrimPrefix(d.URL, "http://")
		}
	}
	dialing := func(addr string) *http.Client {
		return &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, network, addr)
			},
			MaxIdleConnsPerHost: 256, DisableCompression: true,
		}}
	}
	direct, gw := dialing(nodeAddr), dialing(c.gwAddr)
	small, big := p.URL+"ok", p.URL+"big?n=1048576"
	for _, cl := range []*http.Client{direct, gw} {
		get(b, cl, small) // warm: connections, the sandbox
	}
	// Latency: one request at a time, alternating.
	n := sampleCount() * 5
	var d, g samples
	for i := range 2 * n {
		cl, into := direct, &d
		if i%2 == 1 {
			cl, into = gw, &g
		}
		start := time.Now()
		get(b, cl, small)
		*into = append(*into, time.Since(start))
	}
	seconds := time.Duration(envInt("BENCH_SECONDS", 5)) * time.Second
	rs := interleaved(b, direct, gw, small, small, envInt("BENCH_CONCURRENCY", 16), seconds)
	rb := interleaved(b, direct, gw, big, big, 4, seconds)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	b.ReportMetric(ms(d.percentile(50)), "preview-direct-p50-ms")
	b.ReportMetric(ms(g.percentile(50)), "preview-gateway-p50-ms")
	b.ReportMetric(rs[0], "preview-direct-req/s")
	b.ReportMetric(rs[1], "preview-gateway-req/s")
	b.ReportMetric(rb[0], "preview-1MiB-direct-MiB/s")
	b.ReportMetric(rb[1], "preview-1MiB-gateway-MiB/s")
	fmt.Printf("BenchmarkCluster preview: latency p50 direct %.3f ms, through the gateway %.3f ms (added %.3f ms); small answers %.0f req/s direct, %.0f through the gateway (%.0f%%); 1 MiB answers %.0f MiB/s direct, %.0f through the gateway (%.0f%%)\n",
		ms(d.percentile(50)), ms(g.percentile(50)), ms(g.percentile(50)-d.percentile(50)),
		rs[0], rs[1], 100*rs[1]/rs[0], rb[0], rb[1], 100*rb[1]/rb[0])
	if err := sb.Destroy(ctx); err != nil {
		b.Fatal(err)
	}
}

// benchNodeDeath kills a node with SIGKILL BENCH_KILLS times (default 3,
// each node in turn), and measures until a call to one of its sandboxes
// through the gateway answers NODE_UNAVAILABLE, and until the gateway
// lists the node as unavailable (its Lease expired). The node is started
// again between kills.
func benchNodeDeath(b *testing.B, c *benchCluster) {
	ctx := ctxFor(b)
	kills := envInt("BENCH_KILLS", 3)
	var call, listed samples
	for k := range kills {
		name := fmt.Sprintf("node-%d", k%len(c.nodes))
		node := c.nodes[k%len(c.nodes)]
		// A sandbox on that node: the other two cordoned while it is made.
		for _, other := range c.nodes {
			if other != node {
				c.gateway.DrainNode(ctx, otherName(c, other))
			}
		}
		time.Sleep(1100 * time.Millisecond)
		sb := c.gateway.Sandbox(fmt.Sprintf("victim-%d", k))
		info, err := sb.Ensure(ctx)
		if err != nil || info.Node != name {
			b.Fatalf("victim on %s, want %s: %v", info.Node, name, err)
		}
		for _, other := range c.nodes {
			if other != node {
				c.gateway.UncordonNode(ctx, otherName(c, other))
			}
		}
		if _, err := sb.Exec(ctx, "true"); err != nil {
			b.Fatal(err)
		}
		killed := time.Now()
		node.Kill(b)
		var apiErr *client.Error
		for {
			callCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
			_, err := sb.Exec(callCtx, "true")
			cancel()
			if errors.As(err, &apiErr) && apiErr.Code == api.CodeNodeUnavailable {
				call = append(call, time.Since(killed))
				break
			}
			if time.Since(killed) > time.Minute {
				b.Fatalf("no NODE_UNAVAILABLE a minute after kill -9: %v", err)
			}
			time.Sleep(time.Millisecond)
		}
		for {
			nodes, err := c.gateway.Nodes(ctx)
			down := false
			for _, nd := range nodes {
				down = down || (err == nil && nd.Name == name && nd.State == api.NodeUnavailable)
			}
			if down {
				listed = append(listed, time.Since(killed))
				break
			}
			if time.Since(killed) > time.Minute {
				b.Fatalf("%s not listed unavailable a minute after kill -9", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		node.Start(b)
		c.waitNodes(b, len(c.nodes))
		if err := sb.Destroy(ctx); err != nil && !errors.Is(err, client.ErrNotFound) {
			b.Logf("destroying %s: %v", sb.ID(), err)
		}
	}
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	b.ReportMetric(ms(call.percentile(50)), "death-to-call-unavailable-p50-ms")
	b.ReportMetric(ms(listed.percentile(50)), "death-to-node-unavailable-p50-ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("BenchmarkCluster node death (kill -9, %d kills): a call answered NODE_UNAVAILABLE after p50 %.1f ms (max %.1f ms); the node was listed unavailable after p50 %.2f s (max %.2f s)\n",
		kills, ms(call.percentile(50)), ms(call.percentile(100)), listed.percentile(50).Seconds(), listed.percentile(100).Seconds())
}

func otherName(c *benchCluster, d *testdaemon.Daemon) string {
	for i, n := range c.nodes {
		if n == d {
			return fmt.Sprintf("node-%d", i)
		}
	}
	return ""
}
