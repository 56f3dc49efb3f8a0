package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/sandboxd/sandboxd/deploy/kubernetes"
)

// writePKI writes a CA, a serving certificate for 127.0.0.1 and localhost
// signed by it (serving.crt, serving.key) and the service account signing
// key pair (sa.key, sa.pub) into dir, and returns the CA's PEM.
func writePKI(dir string) ([]byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1)},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caPEM...)
	files := map[string][]byte{"ca.crt": caPEM, "serving.crt": certPEM}
	for name, k := range map[string]*ecdsa.PrivateKey{"serving.key": key, "sa.key": saKey} {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		files[name] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	files["sa.pub"] = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

// waitHTTP polls url until it answers 200 (with c's token and CA when c
// is set), the process exits, or ctx ends.
func (p *process) waitHTTP(ctx context.Context, url string, c *Cluster) error {
	tr := &http.Transport{Proxy: nil}
	if c != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(c.CAData)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	var last error
	for {
		if err := p.exited(); err != nil {
			return err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if c != nil {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s answered %s", url, resp.Status)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// writeKubeconfig writes the admin's kubeconfig (CA and token inline).
func (c *Cluster) writeKubeconfig() error {
	kc := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "kubetest",
		"clusters": []any{map[string]any{"name": "kubetest", "cluster": map[string]any{
			"server": c.Server, "certificate-authority-data": base64.StdEncoding.EncodeToString(c.CAData)}}},
		"users":    []any{map[string]any{"name": "admin", "user": map[string]any{"token": c.Token}}},
		"contexts": []any{map[string]any{"name": "kubetest", "context": map[string]any{"cluster": "kubetest", "user": "admin", "namespace": c.Namespace}}},
	}
	data, err := yaml.Marshal(kc)
	if err != nil {
		return err
	}
	c.Kubeconfig = filepath.Join(c.Dir, "kubeconfig")
	return os.WriteFile(c.Kubeconfig, data, 0o600)
}

// install creates the namespace and the Sandbox CRD, and waits until the
// API serves Sandboxes.
func (c *Cluster) install(ctx context.Context) error {
	var crd any
	if err := yaml.Unmarshal(kubernetes.CRD, &crd); err != nil {
		return fmt.Errorf("parsing the CRD manifest: %w", err)
	}
	ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": c.Namespace}}
	if err := c.post(ctx, "/api/v1/namespaces", ns); err != nil {
		return fmt.Errorf("creating namespace %s: %w", c.Namespace, err)
	}
	if err := c.post(ctx, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd); err != nil {
		return fmt.Errorf("installing the Sandbox CRD: %w", err)
	}
	// The CRD is served once it is established; until then lists 404.
	for {
		err := c.get(ctx, "/apis/sandboxd.dev/v1alpha1/namespaces/"+c.Namespace+"/sandboxes")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the Sandbox CRD is not served: %w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAData)
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// post creates an object (converted from YAML's types to JSON).
func (c *Cluster) post(ctx context.Context, path string, obj any) error {
	data, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Server+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.call(req)
}

func (c *Cluster) get(ctx context.Context, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+path, nil)
	if err != nil {
		return err
	}
	return c.call(req)
}

func (c *Cluster) call(req *http.Request) error {
	req.Header.Set("Authorization", "Bearer "+c.Token)
	hc := c.httpClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var b bytes.Buffer
		b.ReadFrom(http.MaxBytesReader(nil, resp.Body, 4096))
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, b.String())
	}
	return nil
}
