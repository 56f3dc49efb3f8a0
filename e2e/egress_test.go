package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// The web the egress tests reach: a namespace of the test's own behind a
// veth, the host at 198.18.102.1, servers at .2, .3 and .4 (HTTP on 80
// answering with the Host it was sent, TLS on 443 answering "tls-ok", an
// echo on TCP 8125 and UDP 53). Names, served by the test's DNS server:
// allowed.test and denied.test share .2 (as a CDN address serves several
// names), unlisted.test is .3, api.zone.test is .4.
const (
	webHost     = "198.18.102.1"
	webShared   = "198.18.102.2"
	webUnlisted = "198.18.102.3"
	webZone     = "198.18.102.4"
	// webResolver is the name server sandboxes' resolv.conf lists: nothing
	// listens there; the daemon redirects it to its forwarder.
	webResolver = "198.18.102.53"
)

var webNames = map[string]string{
	"allowed.test.":  webShared,
	"denied.test.":   webShared,
	"unlisted.test.": webUnlisted,
	"api.zone.test.": webZone,
}

const webServer = `
import socket, ssl, sys, threading
cert, key = sys.argv[1], sys.argv[2]
def listen(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); return s
def loop(s, fn):
    while True:
        c, _ = s.accept()
        threading.Thread(target=fn, args=(c,), daemon=True).start()
def http(c):
    c.settimeout(5); data = b""
    try:
        while b"\r\n\r\n" not in data:
            d = c.recv(4096)
            if not d: break
            data += d
        host = ""
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"host:"): host = line[5:].strip().decode()
        body = ("host=" + host).encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    finally: c.close()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
def tls(c):
    try:
        t = ctx.wrap_socket(c, server_side=True); t.settimeout(5); t.recv(100); t.sendall(b"tls-ok"); t.close()
    except Exception: c.close()
def echo(c):
    try:
        while True:
            d = c.recv(100)
            if not d: break
            c.sendall(d)
    except Exception: pass
    c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53))
    while True:
        d, a = u.recvfrom(2048); u.sendto(d, a)
for port, fn in ((80, http), (443, tls), (8125, echo)):
    threading.Thread(target=loop, args=(listen(port), fn), daemon=True).start()
udp()
`

// probeScript runs in a sandbox: probe MODE ADDR PORT NAME prints what the
// server answered, or exits 3 when nothing came back.
const probeScript = `cat > /tmp/probe.py <<'EOF'
import socket, ssl, sys
mode, addr, port, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
try:
    s = socket.create_connection((addr, port), timeout=2)
    if mode == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s, server_hostname=name); s.sendall(b"hi")
    else:
        s.sendall(b"GET / HTTP/1.0\r\nHost: " + name.encode() + b"\r\n\r\n")
    out = s.recv(1000).decode(errors="replace")
except OSError as e:
    print("blocked", e); sys.exit(3)
if not out:
    print("blocked: closed"); sys.exit(3)
print(out)
EOF`

// startWeb builds the namespace and its servers.
func startWeb(t *testing.T) {
	t.Helper()
	takeSubnet(t, "198.18.102.0/24")
	name := fmt.Sprintf("sbxe2eweb%d", os.Getpid()%100000)
	hostIf := fmt.Sprintf("tew%d", os.Getpid()%100000)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	sh("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	sh("link", "add", hostIf, "type", "veth", "peer", "name", "web0", "netns", name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostIf).Run() })
	sh("addr", "add", webHost+"/24", "dev", hostIf)
	sh("link", "set", hostIf, "up")
	for _, a := range []string{webShared, webUnlisted, webZone} {
		sh("-n", name, "addr", "add", a+"/24", "dev", "web0")
	}
	sh("-n", name, "link", "set", "web0", "up")
	sh("-n", name, "link", "set", "lo", "up")
	sh("-n", name, "route", "add", "default", "via", webHost)
	cert, key := webCert(t)
	srv := exec.Command("ip", "netns", "exec", name, "python3", "-c", webServer, cert, key)
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	// Up when the host reaches it (the host is not filtered).
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", webShared+":80", time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test web did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func webCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"allowed.test", "denied.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return certFile, keyFile
}

// startDNS serves webNames on a loopback UDP port (the daemon's upstream)
// and returns its address. Other names get NXDOMAIN; every name asked is
// sent on asked.
func startDNS(t *testing.T, asked chan<- string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := dnsAnswer(buf[:n], asked); resp != nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func dnsAnswer(q []byte, asked chan<- string) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	qq, err := p.Question()
	if err != nil {
		return nil
	}
	select {
	case asked <- strings.ToLower(qq.Name.String()):
	default:
	}
	addr, ok := webNames[strings.ToLower(qq.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	if !ok {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.StartQuestions()
	b.Question(qq)
	if ok && qq.Type == dnsmessage.TypeA {
		b.StartAnswers()
		b.AResource(dnsmessage.ResourceHeader{Name: qq.Name, Class: dnsmessage.ClassINET, TTL: 300},
			dnsmessage.AResource{A: netip.MustParseAddr(addr).As4()})
	}
	out, _ := b.Finish()
	return out
}

// TestEgressPolicyByDomain is issue 15's egress test: allowed names are
// reachable, denied and unlisted ones are not (by DNS, by address, and by
// TLS SNI or HTTP Host on an address an allowed name shares), DNS to
// another resolver is dropped, and a new policy takes effect on the
// running sandbox, cutting its connections to newly denied addresses.
func TestEgressPolicyByDomain(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	startWeb(t)
	asked := make(chan string, 256)
	upstream := startDNS(t, asked)
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		testEgressPolicy(t, d, asked)
	}, "--blocked-cidrs", "private", "--dns", webResolver, "--dns-upstream", upstream)
}

func testEgressPolicy(t *testing.T, d *testdaemon.Daemon, asked chan string) {
	sb := d.Client.Sandbox("agent", client.WithNetwork(api.NetworkOptions{
		Mode: api.NetworkInternet, AllowDomains: []string{"allowed.test", "*.zone.test"}, DenyDomains: []string{"denied.test"},
	}))
	info, err := sb.Ensure(ctxT(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if info.Network.Default != api.EgressDeny {
		t.Errorf("default = %q, want deny (an allow list was given)", info.Network.Default)
	}
	run(t, sb, probeScript)
	probe := func(mode, addr string, port int, name string) (int, string) {
		t.Helper()
		return exitOf(t, sb, fmt.Sprintf("python3 /tmp/probe.py %s %s %d %s", mode, addr, port, name))
	}
	reachable := func(what string, code int, out, want string) {
		t.Helper()
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("%s: not reachable (exit %d): %s", what, code, out)
		}
	}
	blocked := func(what string, code int, out string) {
		t.Helper()
		if code != 3 {
			t.Errorf("%s: reachable (exit %d): %s", what, code, out)
		}
	}

	t.Run("names resolve by policy", func(t *testing.T) {
		for len(asked) > 0 {
			<-asked
		}
		if got := trim(run(t, sb, "getent hosts allowed.test api.zone.test | awk '{print $1}' | sort | tr '\\n' ' '")); got != webShared+" "+webZone {
			t.Errorf("allowed names resolve to %q", got)
		}
		for _, n := range []string{"denied.test", "unlisted.test"} {
			if code, out := exitOf(t, sb, "getent hosts "+n); code == 0 {
				t.Errorf("%s resolves: %s", n, out)
			}
		}
		// Under default deny, names the policy does not allow never leave
		// the host: the upstream was asked only for the allowed ones.
		for len(asked) > 0 {
			if n := <-asked; n != "allowed.test." && n != "api.zone.test." {
				t.Errorf("the upstream was asked for %s", n)
			}
		}
	})
	t.Run("allowed names are reachable", func(t *testing.T) {
		code, out := probe("http", "allowed.test", 80, "allowed.test")
		reachable("http://allowed.test", code, out, "host=allowed.test")
		code, out = probe("http", "api.zone.test", 80, "api.zone.test")
		reachable("http://api.zone.test (by *.zone.test)", code, out, "host=api.zone.test")
		code, out = probe("tls", "allowed.test", 443, "allowed.test")
		reachable("TLS to allowed.test", code, out, "tls-ok")
		// Other ports of an opened address go by address.
		code, out = probe("http", webShared, 8125, "x")
		reachable("port 8125 of allowed.test's address", code, out, "GET /")
	})
	t.Run("unlisted names are not", func(t *testing.T) {
		code, out := probe("http", webUnlisted, 80, "unlisted.test")
		blocked("unlisted.test's address, never resolved", code, out)
		code, out = probe("http", webUnlisted, 8125, "unlisted.test")
		blocked("unlisted.test's address, port 8125", code, out)
	})
	t.Run("a shared address does not let a denied or unlisted name through", func(t *testing.T) {
		code, out := probe("http", webShared, 80, "denied.test")
		blocked("Host: denied.test on allowed.test's address", code, out)
		code, out = probe("tls", webShared, 443, "denied.test")
		blocked("SNI denied.test on allowed.test's address", code, out)
		code, out = probe("http", webShared, 80, "unlisted.test")
		blocked("Host: unlisted.test on allowed.test's address", code, out)
		code, out = probe("tls", webShared, 443, webShared)
		blocked("TLS without a name on allowed.test's address", code, out)
	})
	t.Run("DNS to another resolver is dropped", func(t *testing.T) {
		// The echo on webShared:53 answers the host (so a drop is the
		// filter's doing), and webShared is open to the sandbox by address.
		if c, err := net.Dial("udp", webShared+":53"); err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("ping"))
			buf := make([]byte, 8)
			if _, err := c.Read(buf); err != nil {
				t.Fatalf("the echo on %s:53 does not answer the host: %v", webShared, err)
			}
			c.Close()
		}
		code, out := exitOf(t, sb, fmt.Sprintf(`python3 -c '
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
u.sendto(b"ping", ("%s", 53))
try: print(u.recv(10)); sys.exit(0)
except OSError as e: print("dropped", e); sys.exit(3)'`, webShared))
		blocked("UDP port 53 of another server", code, out)
		code, out = probe("http", webShared, 53, "x")
		blocked("TCP port 53 of another server", code, out)
	})
	t.Run("summary and metric", func(t *testing.T) {
		st, err := sb.Network(ctxT(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if st.Denied == 0 {
			t.Errorf("denied = 0 after denials")
		}
		var names []string
		for _, dn := range st.LastDenied {
			names = append(names, dn.Name+"/"+dn.Reason)
		}
		for _, want := range []string{"denied.test/dns", "unlisted.test/dns", "denied.test/sni", "denied.test/host"} {
			if !strings.Contains(strings.Join(names, " "), want) {
				t.Errorf("last denied %v lacks %s", names, want)
			}
		}
		metrics := getMetrics(t, d)
		if !strings.Contains(metrics, `sandboxd_egress_denied_total{sandbox="agent"}`) {
			t.Errorf("metrics lack sandboxd_egress_denied_total for agent:\n%s", grepLines(metrics, "egress"))
		}
	})
	t.Run("a new policy applies to the running sandbox", func(t *testing.T) {
		// A connection to allowed.test's address that lives across the change.
		run(t, sb, fmt.Sprintf(`nohup python3 -c '
import socket, time
s = socket.create_connection(("%s", 8125), timeout=2)
n = 0
while True:
    try:
        s.sendall(b"x"); s.recv(10); n += 1; r = "ok %%d" %% n
    except OSError as e:
        r = "cut"
    open("/tmp/conn.tmp", "w").write(r); __import__("os").rename("/tmp/conn.tmp", "/tmp/conn")
    if r == "cut": break
    time.sleep(0.2)' >/dev/null 2>&1 &`, webShared))
		waitOutput(t, sb, "cat /tmp/conn 2>/dev/null", "ok")
		start := time.Now()
		st, err := sb.SetNetwork(ctxT(t, 30*time.Second), api.NetworkPolicy{AllowDomains: []string{"*.zone.test"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("policy replaced in %s (API round trip)", time.Since(start))
		if st.Policy.Default != api.EgressDeny || strings.Join(st.Policy.AllowDomains, ",") != "*.zone.test" {
			t.Errorf("policy after set: %+v", st.Policy)
		}
		waitOutput(t, sb, "cat /tmp/conn 2>/dev/null", "cut")
		code, out := probe("http", "allowed.test", 80, "allowed.test")
		blocked("allowed.test after it left the allow list", code, out)
		code, out = probe("http", webShared, 8125, "x")
		blocked("allowed.test's address after it left the allow list", code, out)
		code, out = probe("http", "api.zone.test", 80, "api.zone.test")
		reachable("api.zone.test after the change", code, out, "host=api.zone.test")

		// Default allow with a deny list: everything but the denied name.
		if _, err := sb.SetNetwork(ctxT(t, 30*time.Second), api.NetworkPolicy{DenyDomains: []string{"denied.test"}}); err != nil {
			t.Fatal(err)
		}
		code, out = probe("http", webUnlisted, 80, "unlisted.test")
		reachable("an unlisted address under default allow", code, out, "host=unlisted.test")
		if code, out := exitOf(t, sb, "getent hosts denied.test"); code == 0 {
			t.Errorf("denied.test resolves under default allow: %s", out)
		}
		// The forwarder learnt denied.test's address: allowed.test, which
		// shares it, still passes by name; denied.test does not.
		code, out = probe("http", webShared, 80, "allowed.test")
		reachable("allowed.test on the address it shares with denied.test", code, out, "host=allowed.test")
		code, out = probe("http", webShared, 80, "denied.test")
		blocked("Host: denied.test under default allow", code, out)
	})
	t.Run("invalid policies name the entry", func(t *testing.T) {
		many := make([]string, api.MaxPolicyEntries+1)
		for i := range many {
			many[i] = fmt.Sprintf("n%d.test", i)
		}
		for _, tc := range []struct {
			p     api.NetworkPolicy
			entry string
		}{
			{api.NetworkPolicy{AllowDomains: []string{"ok.test", "bad domain"}}, "allowDomains[1]"},
			{api.NetworkPolicy{DenyDomains: []string{"*"}}, "denyDomains[0]"},
			{api.NetworkPolicy{DenyCIDRs: []string{"10.0.0.0/99"}}, "denyCidrs[0]"},
			{api.NetworkPolicy{Default: "maybe"}, "default"},
			{api.NetworkPolicy{Mode: api.NetworkNone}, "mode"},
			{api.NetworkPolicy{AllowDomains: many}, "network"},
		} {
			_, err := sb.SetNetwork(ctxT(t, 30*time.Second), tc.p)
			var ae *client.Error
			if !errors.As(err, &ae) || ae.Code != api.CodeInvalidNetworkPolicy || ae.Details["entry"] != tc.entry || !errors.Is(err, client.ErrInvalid) {
				t.Errorf("set %+v: %v (details %v), want INVALID_NETWORK_POLICY naming %s", tc.p, err, detailsOf(ae), tc.entry)
			}
		}
		_, err := d.Client.Sandbox("offline-policy", client.WithNetwork(api.NetworkOptions{
			Mode: api.NetworkNone, AllowDomains: []string{"allowed.test"},
		})).Ensure(ctxT(t, 60*time.Second))
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeInvalidNetworkPolicy {
			t.Errorf("mode none with allowDomains: %v, want INVALID_NETWORK_POLICY", err)
		}
	})
}

func detailsOf(e *client.Error) map[string]any {
	if e == nil {
		return nil
	}
	return e.Details
}

// waitOutput runs cmd until its output contains want (bounded generously:
// the machine is shared).
func waitOutput(t *testing.T, sb *client.Sandbox, cmd, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var out string
	for time.Now().Before(deadline) {
		_, out = exitOf(t, sb, cmd)
		if strings.Contains(out, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%q never said %q; last: %q", cmd, want, out)
}

func getMetrics(t *testing.T, d *testdaemon.Daemon) string {
	t.Helper()
	req, _ := http.NewRequest("GET", d.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
