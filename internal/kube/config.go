// Package kube is sandboxd's small typed client of the Kubernetes API: the
// Sandbox custom resource (sandboxd.dev/v1alpha1), coordination.k8s.io/v1
// Leases, and the node records sandboxd keeps on them. It speaks the API's
// JSON over net/http (no client-go: see docs/ARCHITECTURE.md) and treats
// every answer of the API server as input to validate and bound. It must
// never import the daemon's packages: the node side and the gateway both
// build on it.
package kube

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sandboxd/sandboxd/internal/bounded"
)

// DefaultNamespace is the namespace of sandboxd's objects when the
// kubeconfig's context names none.
const DefaultNamespace = "sandboxd"

// Config says how to reach and authenticate to an API server.
type Config struct {
	// Server is the API server's base URL, https://HOST:PORT.
	Server string
	// CAData is the PEM bundle the server's certificate must chain to;
	// empty: the system's roots.
	CAData []byte
	// Token is a bearer token; TokenFile, when set, is read instead (and
	// again every minute: projected service account tokens rotate).
	Token     string
	TokenFile string
	// CertData and KeyData are a PEM client certificate and its key.
	CertData, KeyData []byte
	// Namespace holds sandboxd's Sandboxes and Leases.
	Namespace string
}

// maxConfigBytes bounds a kubeconfig, token or certificate file.
const maxConfigBytes = 1 << 20

// kubeconfig is the part of a kubeconfig file sandboxd reads.
type kubeconfig struct {
	CurrentContext string `yaml:"current-context"`
	Clusters       []struct {
		Name    string `yaml:"name"`
		Cluster struct {
			Server                   string `yaml:"server"`
			CertificateAuthority     string `yaml:"certificate-authority"`
			CertificateAuthorityData string `yaml:"certificate-authority-data"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		Name string `yaml:"name"`
		User struct {
			Token                 string `yaml:"token"`
			TokenFile             string `yaml:"tokenFile"`
			ClientCertificate     string `yaml:"client-certificate"`
			ClientCertificateData string `yaml:"client-certificate-data"`
			ClientKey             string `yaml:"client-key"`
			ClientKeyData         string `yaml:"client-key-data"`
		} `yaml:"user"`
	} `yaml:"users"`
	Contexts []struct {
		Name    string `yaml:"name"`
		Context struct {
			Cluster   string `yaml:"cluster"`
			User      string `yaml:"user"`
			Namespace string `yaml:"namespace"`
		} `yaml:"context"`
	} `yaml:"contexts"`
}

// LoadKubeconfig reads the current context of a kubeconfig file: its
// server, CA, token or client certificate (inline or as files, relative to
// the kubeconfig's directory) and namespace (DefaultNamespace when none).
func LoadKubeconfig(path string) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(data, &kc); err != nil {
		return nil, fmt.Errorf("parsing kubeconfig %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	ctxName := kc.CurrentContext
	if ctxName == "" && len(kc.Contexts) == 1 {
		ctxName = kc.Contexts[0].Name
	}
	cfg := &Config{}
	var clusterName, userName string
	found := false
	for _, c := range kc.Contexts {
		if c.Name == ctxName {
			clusterName, userName, cfg.Namespace, found = c.Context.Cluster, c.Context.User, c.Context.Namespace, true
		}
	}
	if !found {
		return nil, fmt.Errorf("kubeconfig %s: no context %q", path, ctxName)
	}
	found = false
	for _, c := range kc.Clusters {
		if c.Name != clusterName {
			continue
		}
		found = true
		cfg.Server = c.Cluster.Server
		if cfg.CAData, err = inlineOrFile(c.Cluster.CertificateAuthorityData, rel(c.Cluster.CertificateAuthority)); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: cluster %s's CA: %w", path, clusterName, err)
		}
	}
	if !found {
		return nil, fmt.Errorf("kubeconfig %s: no cluster %q", path, clusterName)
	}
	for _, u := range kc.Users {
		if u.Name != userName {
			continue
		}
		cfg.Token, cfg.TokenFile = u.User.Token, rel(u.User.TokenFile)
		if cfg.CertData, err = inlineOrFile(u.User.ClientCertificateData, rel(u.User.ClientCertificate)); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: user %s's certificate: %w", path, userName, err)
		}
		if cfg.KeyData, err = inlineOrFile(u.User.ClientKeyData, rel(u.User.ClientKey)); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: user %s's key: %w", path, userName, err)
		}
	}
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	return cfg, cfg.validate()
}

// serviceAccountDir holds a pod's service account token, CA and namespace.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// ErrNotInCluster is InClusterConfig's error outside a pod.
var ErrNotInCluster = errors.New("not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set)")

// InClusterConfig is the configuration of a process in a pod: the
// KUBERNETES_SERVICE_HOST/PORT service, the pod's service account token
// (re-read as it rotates), CA and namespace.
func InClusterConfig() (*Config, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, ErrNotInCluster
	}
	ca, err := readFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("in-cluster CA: %w", err)
	}
	cfg := &Config{
		Server: "https://" + net.JoinHostPort(host, port), CAData: ca,
		TokenFile: filepath.Join(serviceAccountDir, "token"), Namespace: DefaultNamespace,
	}
	if ns, err := readFile(filepath.Join(serviceAccountDir, "namespace")); err == nil && strings.TrimSpace(string(ns)) != "" {
		cfg.Namespace = strings.TrimSpace(string(ns))
	}
	return cfg, cfg.validate()
}

func (c *Config) validate() error {
	u, err := url.Parse(c.Server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("API server URL %q: want https://HOST:PORT", c.Server)
	}
	if len(c.CertData) > 0 != (len(c.KeyData) > 0) {
		return errors.New("a client certificate needs its key, and a key its certificate")
	}
	if err := ValidateName(c.Namespace); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	return nil
}

// tlsConfig is the client's TLS configuration for c.
func (c *Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(c.CAData) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c.CAData) {
			return nil, errors.New("the CA data holds no PEM certificate")
		}
		tc.RootCAs = pool
	}
	if len(c.CertData) > 0 {
		cert, err := tls.X509KeyPair(c.CertData, c.KeyData)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// readFile reads a kubeconfig, token or certificate file, bounded.
func readFile(path string) ([]byte, error) { return bounded.ReadFile(path, maxConfigBytes) }

// inlineOrFile returns base64 data when set, else the file's content.
func inlineOrFile(b64, file string) ([]byte, error) {
	if b64 != "" {
		return base64.StdEncoding.DecodeString(b64)
	}
	if file == "" {
		return nil, nil
	}
	return readFile(file)
}
