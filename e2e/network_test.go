package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
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
		Mode: api.NetworkInternet, AllowHostCIDRs: []string{gw + "/32"},
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

// greeterScript starts a server on every address of a sandbox that greets
// whoever connects, in the background.
const greeterScript = `nohup python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d)); s.listen(16)
while True:
    c, _ = s.accept(); c.send(b"hello-from-sandbox"); c.close()' >/dev/null 2>&1 &
sleep 0.2`

// TestAllowCIDRsOpenNeitherOtherSandboxesNorTheHost repeats the attack of
// issue 11 item 8: a sandbox that allows everything ("0.0.0.0/0") reached
// another sandbox's port and a host port.
func TestAllowCIDRsOpenNeitherOtherSandboxesNorTheHost(t *testing.T) {
	d := daemon(t)
	internet := client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet})
	victim := d.Client.Sandbox("victim", internet)
	victimInfo, err := victim.Ensure(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	const port = 8123
	run(t, victim, fmt.Sprintf(greeterScript, port))
	// The server works: the attack below fails because of the filter only.
	if out := run(t, victim, fmt.Sprintf(connectScript, victimInfo.Network.Address, port)); !strings.Contains(out, "hello-from-sandbox") {
		t.Fatalf("the victim's own server is not up: %s", out)
	}
	attacker := d.Client.Sandbox("attacker", client.WithNetwork(api.NetworkOptions{
		Mode: api.NetworkInternet, AllowCIDRs: []string{"0.0.0.0/0"},
	}))
	attackerInfo, err := attacker.Ensure(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	hostPorts := map[string]int{
		attackerInfo.Network.Gateway: hostServer(t, attackerInfo.Network.Gateway),
		victimInfo.Network.Gateway:   hostServer(t, victimInfo.Network.Gateway),
	}
	if code, out := exitOf(t, attacker, fmt.Sprintf(connectScript, victimInfo.Network.Address, port)); code != 3 {
		t.Errorf("another sandbox's port reachable with allowCidrs 0.0.0.0/0 (exit %d): %s", code, out)
	}
	for addr, p := range hostPorts {
		if code, out := exitOf(t, attacker, fmt.Sprintf(connectScript, addr, p)); code != 3 {
			t.Errorf("host port %s:%d reachable with allowCidrs 0.0.0.0/0 (exit %d): %s", addr, p, code, out)
		}
	}
	// The other way round: the victim allowing everything does not reach
	// the attacker either.
	run(t, attacker, fmt.Sprintf(greeterScript, port))
	if code, out := exitOf(t, victim, fmt.Sprintf(connectScript, attackerInfo.Network.Address, port)); code != 3 {
		t.Errorf("sandbox reachable from another one (exit %d): %s", code, out)
	}

	t.Run("an entry inside the sandbox subnet is refused", func(t *testing.T) {
		for _, opts := range []api.NetworkOptions{
			{Mode: api.NetworkInternet, AllowCIDRs: []string{victimInfo.Network.Address + "/32"}},
			{Mode: api.NetworkInternet, AllowCIDRs: []string{victimInfo.Network.Gateway}},
			{Mode: api.NetworkNone, AllowHostCIDRs: []string{"10.0.0.1/32"}},
			{Mode: api.NetworkInternet, AllowHostCIDRs: []string{"fd00::/8"}},
		} {
			_, err := d.Client.Sandbox("refused", client.WithNetwork(opts)).Ensure(ctxT(t, 60*time.Second))
			if !errors.Is(err, client.ErrInvalid) {
				t.Errorf("create with %+v: %v, want ErrInvalid", opts, err)
			}
		}
	})
}

// hostLAN builds a network the host sits on, with public addresses as many
// servers have: a namespace of the test's own behind a veth, the host at
// 198.18.101.1/24, a neighbour at 198.18.101.2 that greets on port 8124.
// It returns the neighbour's address.
func hostLAN(t *testing.T) string {
	t.Helper()
	takeSubnet(t, "198.18.101.0/24")
	name := fmt.Sprintf("sbxe2elan%d", os.Getpid()%100000)
	hostIf, peerIf := fmt.Sprintf("tel%d", os.Getpid()%100000), "lan0"
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	sh("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	sh("link", "add", hostIf, "type", "veth", "peer", "name", peerIf, "netns", name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostIf).Run() })
	sh("addr", "add", "198.18.101.1/24", "dev", hostIf)
	sh("link", "set", hostIf, "up")
	sh("-n", name, "addr", "add", "198.18.101.2/24", "dev", peerIf)
	sh("-n", name, "link", "set", peerIf, "up")
	srv := exec.Command("ip", "netns", "exec", name, "python3", "-c", `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.101.2", 8124)); s.listen(16)
while True:
    c, _ = s.accept(); c.send(b"hello-from-lan"); c.close()`)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	return "198.18.101.2"
}

// TestHostNetworksAreBlocked repeats issue 11's item 9: the networks the
// host sits on (and its gateway) were reachable from every sandbox when
// their addresses were not private. --blocked-cidrs makes the set
// configurable.
func TestHostNetworksAreBlocked(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	neighbour := hostLAN(t)
	internet := client.WithNetwork(api.NetworkOptions{Mode: api.NetworkInternet})
	probe := fmt.Sprintf(connectScript, neighbour, 8124)

	d := testdaemon.Start(t, testdaemon.Options{})
	if !strings.Contains(d.Logs(), "198.18.101.0/24") {
		t.Errorf("the daemon's start-up log does not list the host network 198.18.101.0/24 as blocked:\n%s", d.Logs())
	}
	sb := d.Client.Sandbox("lan-closed", internet)
	if code, out := exitOf(t, sb, probe); code != 3 {
		t.Errorf("the host's own network reachable (exit %d): %s", code, out)
	}
	allowed := d.Client.Sandbox("lan-allowed", client.WithNetwork(api.NetworkOptions{
		Mode: api.NetworkInternet, AllowCIDRs: []string{neighbour + "/32"},
	}))
	if out := run(t, allowed, probe); !strings.Contains(out, "hello-from-lan") {
		t.Errorf("allowed neighbour not reachable: %s", out)
	}

	open := testdaemon.Start(t, testdaemon.Options{Args: []string{"--blocked-cidrs", "private"}})
	if out := run(t, open.Client.Sandbox("lan-open", internet), probe); !strings.Contains(out, "hello-from-lan") {
		t.Errorf("--blocked-cidrs private: the host's network is still blocked: %s", out)
	}
}
