package e2e

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/gateway"
	"github.com/sandboxd/sandboxd/internal/gateway/gatewaytest"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// gatewayToken is the token the node and the gateway share (a node
// refuses one shorter than 32 characters).
const gatewayToken = "gateway-test-token-0123456789abcdef"

// startGatewayToNode starts a real node and the gateway's handler in
// front of it, on the port the node's preview URLs name. The cluster's
// directory is in memory (gatewaytest): what is under test is the
// gateway's forwarding to a real node; the directory on a real
// kube-apiserver is e2e/cluster_test.go's.
func startGatewayToNode(t *testing.T) (node *testdaemon.Daemon, dir *gatewaytest.Directory, url string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	node = testdaemon.Start(t, testdaemon.Options{Token: gatewayToken, Args: []string{"--preview-port", port}})
	dir = gatewaytest.New()
	dir.Add(gateway.Node{Name: "n1", URL: node.URL, Ready: true, ReportedAt: time.Now()})
	gw := gateway.New(gateway.Options{Directory: dir, Token: gatewayToken, PreviewDomain: "localhost",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := &httptest.Server{Listener: l, Config: &http.Server{Handler: gw}}
	srv.Start()
	t.Cleanup(srv.Close)
	return node, dir, srv.URL
}

// TestGatewayToARealNode drives a real node through the gateway: every
// kind of call (JSON, SSE, raw files, WebSocket, preview host), the
// node's answers with "node", and NODE_UNAVAILABLE while the node is
// down, then the sandbox back with its files.
func TestGatewayToARealNode(t *testing.T) {
	node, dir, url := startGatewayToNode(t)
	c, err := client.New(url, client.WithToken(gatewayToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Minute)
	sb := c.Sandbox("via-gw")

	t.Run("exec places the sandbox and answers carry its node", func(t *testing.T) {
		if out := run(t, sb, "echo hi from $(hostname)"); out != "hi from via-gw\n" {
			t.Errorf("exec: %q", out)
		}
		if dir.PlacedOn("via-gw") != "n1" {
			t.Errorf("placed on %q", dir.PlacedOn("via-gw"))
		}
		info, err := sb.Info(ctx)
		if err != nil || info.Node != "n1" {
			t.Errorf("info: %+v %v", info, err)
		}
		list, err := c.List(ctx)
		if err != nil || len(list) != 1 || list[0].Node != "n1" {
			t.Errorf("list: %+v %v", list, err)
		}
	})

	t.Run("streams, files and a terminal", func(t *testing.T) {
		st, err := sb.ExecStream(ctx, "echo one; sleep 0.2; echo two")
		if err != nil {
			t.Fatal(err)
		}
		res, err := st.Collect(client.Callbacks{})
		if err != nil || res.Stdout != "one\ntwo\n" || res.ExitCode != 0 {
			t.Errorf("stream: %+v %v", res, err)
		}
		payload := strings.Repeat("0123456789", 200_000) // 2 MB, streamed both ways
		if _, err := sb.WriteFile(ctx, "/workspace/big.txt", []byte(payload)); err != nil {
			t.Fatal(err)
		}
		f, err := sb.ReadFile(ctx, "/workspace/big.txt")
		if err != nil || string(f.Content) != payload {
			t.Fatalf("read back: %d bytes, %v", len(f.Content), err)
		}
		term, err := sb.Terminal(ctx, client.TerminalOptions{Session: "default"})
		if err != nil {
			t.Fatal(err)
		}
		out := readTerminal(term)
		io.WriteString(term, "echo \"<$((6*7))>\"\r")
		out.waitFor(t, "<42>")
		term.Close()
	})

	t.Run("preview URLs name the gateway and reach the sandbox", func(t *testing.T) {
		testdaemon.StartTestServer(t, sb, "0.0.0.0:8080")
		p, err := sb.ExposePort(ctx, 8080)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(p.URL, ".localhost:"+strings.TrimPrefix(url, "http://127.0.0.1:")+"/") {
			t.Errorf("preview URL %s does not name the gateway %s", p.URL, url)
		}
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, strings.TrimPrefix(url, "http://"))
		}}}
		status, body, _ := get(t, hc, p.URL, nil)
		if status != 200 || !strings.Contains(body, "hello from via-gw") {
			t.Errorf("preview through the gateway: %d %s", status, body)
		}
	})

	t.Run("a killed node answers NODE_UNAVAILABLE, then its sandbox is back with its files", func(t *testing.T) {
		node.Kill(t)
		_, err := sb.Exec(ctx, "true")
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.Code != api.CodeNodeUnavailable || apiErr.Status != 503 {
			t.Fatalf("exec on a killed node: %v", err)
		}
		node.Start(t)
		f, err := sb.ReadFile(ctx, "/workspace/big.txt")
		if err != nil || len(f.Content) != 2_000_000 {
			t.Fatalf("after the node's restart: %d bytes, %v", len(f.Content), err)
		}
	})
}
