package kube

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadKubeconfigFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("CA"), 0o600)
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600)
	kc := `apiVersion: v1
kind: Config
current-context: two
clusters:
- name: c1
  cluster: {server: "https://one:6443"}
- name: c2
  cluster: {server: "https://two:6443", certificate-authority: ca.pem}
users:
- name: u2
  user: {tokenFile: token}
contexts:
- name: one
  context: {cluster: c1, user: u2}
- name: two
  context: {cluster: c2, user: u2, namespace: team}
`
	path := filepath.Join(dir, "config")
	os.WriteFile(path, []byte(kc), 0o600)
	cfg, err := LoadKubeconfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server != "https://two:6443" || string(cfg.CAData) != "CA" || cfg.TokenFile != filepath.Join(dir, "token") || cfg.Namespace != "team" {
		t.Fatalf("config %+v", cfg)
	}
	for name, bad := range map[string]string{
		"no context": strings.Replace(kc, "current-context: two", "current-context: three", 1),
		"bad server": strings.Replace(kc, "https://two:6443", "ftp://two", 1),
		"bad ns":     strings.Replace(kc, "namespace: team", "namespace: ../x", 1),
		"not yaml":   "{{{",
	} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := LoadKubeconfig(path); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	os.WriteFile(path, make([]byte, maxConfigBytes+1), 0o600)
	if _, err := LoadKubeconfig(path); err == nil {
		t.Error("an oversized kubeconfig loaded")
	}
}

func TestAPIErrorIs(t *testing.T) {
	for _, c := range []struct {
		body string
		code int
		want error
	}{
		{`{"kind":"Status","reason":"AlreadyExists","code":409}`, 409, ErrAlreadyExists},
		{`{"kind":"Status","reason":"Conflict","code":409}`, 409, ErrConflict},
		{`{"kind":"Status","reason":"NotFound","code":404}`, 404, ErrNotFound},
		{`{"kind":"Status","reason":"Expired","code":410}`, 410, ErrGone},
		{`not json`, 401, ErrUnauthorized},
	} {
		err := error(apiError(c.code, []byte(c.body)))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v is not %v", c.body, err, c.want)
		}
	}
	if errors.Is(apiError(409, []byte(`{"kind":"Status","reason":"AlreadyExists"}`)), ErrConflict) {
		t.Error("AlreadyExists is a conflict")
	}
	if e := apiError(500, []byte(strings.Repeat("x", 10000))); len(e.Message) > maxMessage+3 {
		t.Errorf("message of %d bytes kept", len(e.Message))
	}
}

func TestReadLineBound(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader(strings.Repeat("a", 100)+"\nok\n"), 16)
	if _, err := readLine(r, 50); err == nil {
		t.Fatal("a line over the bound was read")
	}
	r = bufio.NewReaderSize(strings.NewReader(strings.Repeat("a", 40)+"\nok"), 16)
	if l, err := readLine(r, 50); err != nil || len(l) != 41 {
		t.Fatalf("%d %v", len(l), err)
	}
	if l, err := readLine(r, 50); err != nil || string(l) != "ok" {
		t.Fatalf("%q %v", l, err)
	}
}

func TestNodeFromLeaseHostile(t *testing.T) {
	now := time.Now()
	secs := int32(10)
	lease := func(name, node, status string, renewed time.Time) *Lease {
		return &Lease{
			Metadata: ObjectMeta{Name: name, Labels: map[string]string{LabelNode: node}, Annotations: map[string]string{AnnotationStatus: status}},
			Spec:     LeaseSpec{LeaseDurationSeconds: &secs, RenewTime: &MicroTime{renewed}},
		}
	}
	good := `{"url":"http://10.0.0.5:7070","running":1}`
	n, err := NodeFromLease(lease("sandboxd-node-a", "a", good, now.Add(-time.Second)), now)
	if err != nil || n.State != NodeReady {
		t.Fatalf("%+v %v", n, err)
	}
	if n, _ := NodeFromLease(lease("sandboxd-node-a", "a", good, now.Add(-11*time.Second)), now); n.State != NodeUnavailable {
		t.Errorf("an expired lease is %s", n.State)
	}
	for name, l := range map[string]*Lease{
		"name mismatch": lease("sandboxd-node-b", "a", good, now),
		"bad node":      lease("sandboxd-node-A", "A", good, now),
		"bad json":      lease("sandboxd-node-a", "a", "{", now),
		"bad url":       lease("sandboxd-node-a", "a", `{"url":"file:///etc/passwd"}`, now),
		"url with path": lease("sandboxd-node-a", "a", `{"url":"http://h:1/x?y"}`, now),
		"huge status":   lease("sandboxd-node-a", "a", `{"url":"http://h:1","version":"`+strings.Repeat("v", 5000)+`"}`, now),
	} {
		if _, err := NodeFromLease(l, now); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
