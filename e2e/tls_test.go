package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// selfSigned writes a self-signed certificate for 127.0.0.1, localhost and
// *.localhost (preview hosts) to certFile and keyFile, and returns it.
func selfSigned(t *testing.T, name, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost", "*.localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Written beside and renamed, as a certificate manager does.
	write := func(path, typ string, der []byte) {
		tmp := path + ".new"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(keyFile, "EC PRIVATE KEY", keyDER)
	write(certFile, "CERTIFICATE", der)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// servedCert returns the subject the daemon's TLS listener presents now.
func servedCert(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestTLS: with --tls-cert and --tls-key the API and previews are HTTPS
// (preview URLs say https), plain HTTP gets no answer, SIGHUP picks up a
// renewed certificate, and a broken one keeps the one in use.
func TestTLS(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := selfSigned(t, "first", certFile, keyFile)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--tls-cert", certFile, "--tls-key", keyFile}})
	addr := strings.TrimPrefix(d.URL, "http://")

	roots := x509.NewCertPool()
	roots.AddCert(first)
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		// Preview hosts (*.localhost) are this daemon, as a browser has it.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, network, addr)
		},
	}}
	c, err := client.New("https://"+addr, client.WithToken(d.Token), client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	d.Client = c // for the teardown
	ctx := ctxT(t, 3*time.Minute)
	sb := c.Sandbox("tls")
	if out := run(t, sb, "echo over https"); trim(out) != "over https" {
		t.Fatalf("exec over https: %q", out)
	}

	// A preview URL is https and serves the sandbox's server through TLS.
	p, err := sb.StartProcess(ctx, "mkdir -p /tmp/www && echo preview-ok > /tmp/www/index.html && exec python3 -m http.server 8000 -d /tmp/www")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitForPort(ctx, 8000, client.PortCheck{}); err != nil {
		t.Fatal(err)
	}
	exposed, err := sb.ExposePort(ctx, 8000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(exposed.URL, "https://") {
		t.Fatalf("preview URL %q is not https", exposed.URL)
	}
	if code, body, _ := get(t, hc, exposed.URL, nil); code != 200 || trim(body) != "preview-ok" {
		t.Fatalf("GET %s: %d %q", exposed.URL, code, body)
	}

	// Plain HTTP to the TLS port gets no HTTP answer.
	if resp, err := http.Get("http://" + addr + "/v1/sandboxes"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP was served: %d %s", resp.StatusCode, body)
		}
	}

	// A renewed certificate is served after SIGHUP, without a restart.
	selfSigned(t, "second", certFile, keyFile)
	if got := servedCert(t, addr); got != "first" {
		t.Fatalf("before SIGHUP the daemon serves %q, want the first certificate", got)
	}
	syscall.Kill(d.PID(), syscall.SIGHUP)
	waitFor(t, 30*time.Second, func() bool { return servedCert(t, addr) == "second" }, "the renewed certificate after SIGHUP")

	// A broken file on reload keeps the certificate in use, and says so.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(d.PID(), syscall.SIGHUP)
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(d.Logs(), "keeping the TLS certificate in use") },
		"the failed reload in the log")
	if got := servedCert(t, addr); got != "second" {
		t.Errorf("after a failed reload the daemon serves %q, want the second certificate", got)
	}
	if syscall.Kill(d.PID(), 0) != nil {
		t.Fatal("SIGHUP ended the daemon")
	}
}

// waitFor polls cond until it holds or limit passes.
func waitFor(t *testing.T, limit time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
