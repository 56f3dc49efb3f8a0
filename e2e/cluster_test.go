package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
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

// testCluster is a real cluster on this machine: kube-apiserver and etcd
// (kubetest), sandboxd nodes registered through them, and gateways
// (`sandboxd gateway`, the real binary) in front.
type testCluster struct {
	kube     *kubetest.Cluster
	token    string
	nodes    []*testdaemon.Daemon
	gateways []string // base URLs
	// gatewayCmds are the gateways' processes; tokenFile their token.
	gatewayCmds []*exec.Cmd
	tokenFile   string
	client      *client.Client
}

// startCluster starts n nodes and two gateways; nodes' preview URLs name
// the first gateway's port.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	testdaemon.SkipUnlessRoot(t)
	kc := kubetest.Start(t)
	c := &testCluster{kube: kc, token: randomToken(t)}
	gwAddrs := []string{freeLoopback(t), freeLoopback(t)}
	_, gwPort, _ := net.SplitHostPort(gwAddrs[0])
	for i := range n {
		c.nodes = append(c.nodes, testdaemon.Start(t, testdaemon.Options{Token: c.token, Args: []string{
			"--cluster-kubeconfig", kc.Kubeconfig, "--node-name", fmt.Sprintf("node-%d", i),
			"--preview-port", gwPort, "--default-memory", "256Mi", "--node-label", fmt.Sprintf("zone=z%d", i),
		}}))
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(c.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.tokenFile = tokenFile
	for _, addr := range gwAddrs {
		c.gatewayCmds = append(c.gatewayCmds, testdaemon.StartGateway(t, kc.Kubeconfig, tokenFile, addr))
		c.gateways = append(c.gateways, "http://"+addr)
	}
	var err error
	if c.client, err = client.New(c.gateways[0], client.WithToken(c.token)); err != nil {
		t.Fatal(err)
	}
	// Every node's first heartbeat. The last answer goes with a timeout:
	// the list (states, heartbeat times) or the error says which of the
	// nodes, the gateway or kube was behind.
	var last string
	allReady := func() bool {
		nodes, err := c.client.Nodes(context.Background())
		ready := 0
		last = fmt.Sprintf("at %s: err %v", time.Now().UTC().Format(time.TimeOnly), err)
		for _, nd := range nodes {
			last += fmt.Sprintf("; %s %s heartbeat %s", nd.Name, nd.State, nd.HeartbeatAt.Format(time.TimeOnly))
			if nd.State == api.NodeReady {
				ready++
			}
		}
		return err == nil && ready == n
	}
	for deadline := time.Now().Add(60 * time.Second); !allReady(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for every node ready; the last answer, %s", last)
		}
	}
	return c
}

func randomToken(t *testing.T) string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freeLoopback(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestCluster drives a real three-node cluster through its gateways.
func TestCluster(t *testing.T) {
	c := startCluster(t, 3)
	ctx := ctxT(t, 10*time.Minute)

	t.Run("sandboxes spread over nodes", func(t *testing.T) {
		seen := map[string]bool{}
		for i := range 3 {
			sb, err := c.client.Sandbox(fmt.Sprintf("spread-%d", i)).Ensure(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sb.Node == "" {
				t.Fatalf("ensure answered no node: %+v", sb)
			}
			seen[sb.Node] = true
			info, err := c.client.Sandbox(sb.ID).Info(ctx)
			if err != nil || info.Node != sb.Node {
				t.Errorf("info: %+v %v, want node %s", info, err, sb.Node)
			}
		}
		if len(seen) != 3 {
			t.Errorf("3 sandboxes on %d nodes: %v", len(seen), seen)
		}
		list, err := c.client.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, sb := range list {
			if strings.HasPrefix(sb.ID, "spread-") && sb.Node != "" {
				got++
			}
		}
		if got != 3 {
			t.Errorf("the merged list has %d of the 3 sandboxes with their node: %+v", got, list)
		}
	})

	sb := c.client.Sandbox("through")
	t.Run("exec, files, streams, terminal and previews through the gateway", func(t *testing.T) {
		if out := run(t, sb, "echo hi from $(hostname)"); out != "hi from through\n" {
			t.Errorf("exec: %q", out)
		}
		if _, err := sb.WriteFile(ctx, "/workspace/f.txt", []byte("payload")); err != nil {
			t.Fatal(err)
		}
		f, err := sb.ReadFile(ctx, "/workspace/f.txt")
		if err != nil || string(f.Content) != "payload" {
			t.Fatalf("read back: %+v %v", f, err)
		}
		st, err := sb.ExecStream(ctx, "echo one; sleep 0.2; echo two")
		if err != nil {
			t.Fatal(err)
		}
		res, err := st.Collect(client.Callbacks{})
		if err != nil || res.Stdout != "one\ntwo\n" {
			t.Errorf("stream: %+v %v", res, err)
		}
		term, err := sb.Terminal(ctx, client.TerminalOptions{Session: "default"})
		if err != nil {
			t.Fatal(err)
		}
		out := readTerminal(term)
		io.WriteString(term, "echo \"<$((6*7))>\"\r")
		out.waitFor(t, "<42>")
		term.Close()

		testdaemon.StartTestServer(t, sb, "0.0.0.0:8080")
		p, err := sb.ExposePort(ctx, 8080)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.URL, strings.TrimPrefix(c.gateways[0], "http://127.0.0.1")) {
			t.Errorf("preview URL %s does not name the gateway %s", p.URL, c.gateways[0])
		}
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, strings.TrimPrefix(c.gateways[0], "http://"))
		}}}
		resp, err := hc.Get(p.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "hello from through") {
			t.Errorf("preview through the gateway: %d %s", resp.StatusCode, body)
		}
	})

	t.Run("two gateways creating one ID make one sandbox", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				cl, _ := client.New(c.gateways[i%2], client.WithToken(c.token))
				if _, err := cl.Sandbox("race").Exec(ctx, "true"); err != nil {
					t.Errorf("exec through gateway %d: %v", i%2, err)
				}
			})
		}
		wg.Wait()
		on := 0
		for _, d := range c.nodes {
			if _, err := d.Client.Sandbox("race").Info(ctx); err == nil {
				on++
			} else if !errors.Is(err, client.ErrNotFound) {
				t.Fatal(err)
			}
		}
		if on != 1 {
			t.Fatalf("the sandbox exists on %d nodes, want 1", on)
		}
	})

	t.Run("placement honours a nodeSelector", func(t *testing.T) { testClusterNodeSelector(ctx, t, c) })
	t.Run("images imported through the gateway are on every node", func(t *testing.T) { testClusterImages(ctx, t, c) })

	t.Run("tenants' keys work across the cluster and a forged identity is refused", func(t *testing.T) {
		testClusterTenants(ctx, t, c)
	})

	t.Run("a killed node answers NODE_UNAVAILABLE and comes back with its files", func(t *testing.T) {
		info, err := c.client.Sandbox("through").Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var node *testdaemon.Daemon
		for i, d := range c.nodes {
			if info.Node == fmt.Sprintf("node-%d", i) {
				node = d
			}
		}
		killed := time.Now()
		node.Kill(t)
		var apiErr *client.Error
		waitFor(t, 30*time.Second, func() bool {
			_, err := sb.Exec(ctx, "true")
			return errors.As(err, &apiErr) && apiErr.Code == api.CodeNodeUnavailable
		}, "NODE_UNAVAILABLE")
		if took := time.Since(killed); took > 15*time.Second {
			t.Errorf("NODE_UNAVAILABLE %s after kill -9, want within 15 s", took)
		}
		t.Logf("NODE_UNAVAILABLE %s after kill -9", time.Since(killed).Round(time.Millisecond))
		// Its Lease expires too: /v1/nodes says so within 15 s.
		waitFor(t, 30*time.Second, func() bool {
			nodes, err := c.client.Nodes(ctx)
			for _, nd := range nodes {
				if nd.Name == info.Node {
					return err == nil && nd.State == api.NodeUnavailable
				}
			}
			return false
		}, "the node listed as unavailable")
		if took := time.Since(killed); took > 15*time.Second {
			t.Errorf("node listed unavailable %s after kill -9, want within 15 s", took)
		}
		node.Start(t)
		waitFor(t, 2*time.Minute, func() bool {
			_, err := sb.Exec(ctx, "true")
			return err == nil
		}, "the node back")
		f, err := sb.ReadFile(ctx, "/workspace/f.txt")
		if err != nil || string(f.Content) != "payload" {
			t.Fatalf("after the node's restart: %+v %v", f, err)
		}
	})

	t.Run("drain moves a sandbox with its files", func(t *testing.T) { testDrainMoves(t, ctx, c) })
	outer := t // the restarted gateway serves the subtests after it
	t.Run("a gateway restart loses nothing", func(t *testing.T) { testGatewayRestart(t, outer, ctx, c) })
	t.Run("a destroy through one gateway is seen by the other at once", func(t *testing.T) { testWatchedPlacements(t, ctx, c) })
}
