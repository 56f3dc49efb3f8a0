package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
)

const connectScript = `python3 -c '
import socket, sys; s=socket.socket(); s.settimeout(2)
try:
    s.connect(("%s", %d)); print(s.recv(100).decode())
except OSError as e:
    print("blocked", e); sys.exit(3)'`

// hostServer listens on the host side of a sandbox's link and greets
// whoever connects.
func hostServer(t *testing.T, addr string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello-from-host"))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestNetworkNoneHasOnlyLoopback(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("offline", client.WithNetwork(api.NetworkOptions{Mode: api.NetworkNone}))
	if got := trim(run(t, sb, "ls /sys/class/net")); got != "lo" {
		t.Errorf("interfaces = %q, want only lo", got)
	}
	// Loopback works inside.
	out := run(t, sb, `python3 -c '
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
threading.Thread(target=lambda: srv.accept()[0].send(b"loop-ok"), daemon=True).start()
c = socket.create_connection(srv.getsockname()); print(c.recv(10).decode())'`)
	if trim(out) != "loop-ok" {
		t.Errorf("loopback: %q", out)
	}
}

func TestNetworkInternetBlocksTheHostUnlessAllowed(t *testing.T) {
	d := daemon(t)
	closed := d.Client.Sandbox("egress-closed", client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet}))
	info, err := closed.Ensure(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	gw := info.Network.Gateway
	if gw == "" || info.Network.Address == "" {
		t.Fatalf("internet sandbox has no addresses: %+v", info.Network)
	}
	port := hostServer(t, gw)
	if code, out := exitOf(t, closed, fmt.Sprintf(connectScript, gw, port)); code != 3 {
		t.Errorf("host reachable without an allowlist (exit %d): %s", code, out)
	}
	open := d.Client.Sandbox("egress-open", client.WithNetwork(api.NetworkOptions{
		Mode: api.NetworkInternet, AllowCIDRs: []string{gw + "/32"},
	}))
	openInfo, err := open.Ensure(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// The allowlist names one host address: the server on it is reachable,
	// the same host's other address (this sandbox's own gateway) is not.
	if out := run(t, open, fmt.Sprintf(connectScript, gw, port)); !strings.Contains(out, "hello-from-host") {
		t.Errorf("allowed host address not reachable: %s", out)
	}
	port2 := hostServer(t, openInfo.Network.Gateway)
	if code, out := exitOf(t, open, fmt.Sprintf(connectScript, openInfo.Network.Gateway, port2)); code != 3 {
		t.Errorf("address outside the allowlist reachable (exit %d): %s", code, out)
	}
	if got := trim(run(t, open, "ls /sys/class/net | sort | tr '\\n' ' '")); got != "eth0 lo" {
		t.Errorf("interfaces = %q", got)
	}
}
