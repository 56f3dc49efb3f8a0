package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/gateway"
	"github.com/sandboxd/sandboxd/internal/kubekeys"
	"github.com/sandboxd/sandboxd/internal/kubetest"
)

// TestGatewayOnKubernetes drives the gateway over a real kube-apiserver
// (internal/kubetest), one per test, shared by the subtests; the last one
// stops it.
func TestGatewayOnKubernetes(t *testing.T) {
	kc := kubetest.Start(t)
	client := kc.Client(t)
	gw := httptest.NewServer(gateway.New(gateway.Options{
		Directory: gateway.KubeDirectory{Client: client}, Token: token,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}))
	t.Cleanup(gw.Close)

	t.Run("keys are Secrets of hashes that every reader follows", func(t *testing.T) {
		keys, err := kubekeys.Open(context.Background(), client)
		if err != nil {
			t.Fatal(err)
		}
		kgw := httptest.NewServer(gateway.New(gateway.Options{
			Directory: gateway.KubeDirectory{Client: client}, Token: token, Keys: keys,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}))
		defer kgw.Close()
		// A node's copy: its own Keys following the same Secrets.
		nodeKeys, err := kubekeys.Open(context.Background(), client)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			kubekeys.Follow(ctx, client, nodeKeys, slog.New(slog.NewTextHandler(io.Discard, nil)))
		}()
		defer func() { cancel(); <-done }()

		resp, b := call(t, "POST", kgw.URL+"/v1/keys", `{"name":"team-a","quotas":{"maxRunning":2}}`)
		var created api.KeyCreated
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &created) != nil {
			t.Fatalf("create: %d %s", resp.StatusCode, b)
		}
		sec, err := client.GetSecret(context.Background(), "sandboxd-key-team-a")
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range sec.Data {
			if strings.Contains(string(v), created.Key) || strings.Contains(string(v), strings.TrimPrefix(created.Key, "sbx_")) {
				t.Fatalf("the Secret holds the key itself: %s", v)
			}
		}
		if c, ok := nodeKeys.Authenticate(created.Key); !ok || c.Name != "team-a" || c.Admin {
			t.Fatalf("the node's copy: %+v %v", c, ok)
		}
		if q := nodeKeys.QuotaOf("team-a"); q.MaxRunning != 2 {
			t.Errorf("the node's quota of team-a: %+v", q)
		}
		if resp, b := call(t, "POST", kgw.URL+"/v1/keys", `{"name":"team-a"}`); resp.StatusCode != http.StatusConflict || errorCode(t, b) != api.CodeKeyExists {
			t.Errorf("a second team-a: %d %s", resp.StatusCode, b)
		}
		// A tenant's key manages no keys and drains no nodes.
		for _, path := range []string{"/v1/keys", "/v1/nodes"} {
			req, _ := http.NewRequest("GET", kgw.URL+path, nil)
			req.Header.Set("Authorization", "Bearer "+created.Key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s with a tenant's key: %d, want 403", path, resp.StatusCode)
			}
		}
		resp, b = call(t, "POST", kgw.URL+"/v1/keys/team-a/rotate", "")
		var rotated api.KeyCreated
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &rotated) != nil {
			t.Fatalf("rotate: %d %s", resp.StatusCode, b)
		}
		waitUntil(t, func() bool {
			_, oldOK := nodeKeys.Authenticate(created.Key)
			_, newOK := nodeKeys.Authenticate(rotated.Key)
			return !oldOK && newOK
		}, "the node's copy takes the rotation")
		if resp, b := call(t, "DELETE", kgw.URL+"/v1/keys/team-a", ""); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("remove: %d %s", resp.StatusCode, b)
		}
		if _, ok := keys.Authenticate(rotated.Key); ok {
			t.Error("the gateway still takes a key it removed")
		}
		waitUntil(t, func() bool { _, ok := nodeKeys.Authenticate(rotated.Key); return !ok }, "the node's copy drops the removed key")
	})

	t.Run("api down answers CLUSTER_UNAVAILABLE", func(t *testing.T) {
		resp, b := call(t, "GET", gw.URL+"/v1/nodes", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("nodes with the API up: %d %s", resp.StatusCode, b)
		}
		if err := kc.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/v1/nodes", ""},
			{"GET", "/v1/sandboxes", ""},
			{"PUT", "/v1/sandboxes/new-one", "{}"},
			{"GET", "/v1/sandboxes/new-one", ""},
			{"POST", "/v1/sandboxes/new-one/exec", `{"cmd":["true"]}`},
			{"POST", "/v1/nodes/node-1/uncordon", ""},
		} {
			resp, b := call(t, c.method, gw.URL+c.path, c.body)
			if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, b) != api.CodeClusterUnavailable {
				t.Errorf("%s %s with the API down: %d %s, want 503 CLUSTER_UNAVAILABLE", c.method, c.path, resp.StatusCode, b)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "5" {
				t.Errorf("%s %s: Retry-After %q, want 5", c.method, c.path, ra)
			}
		}
	})
}

// waitUntil polls cond for up to 30 s (a watch delivers in milliseconds;
// the bound is for a loaded machine).
func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
