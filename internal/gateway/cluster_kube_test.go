package gateway_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/gateway"
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
