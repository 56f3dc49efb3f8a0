package gateway_test

import (
	"net/http"
	"testing"
)

// An API call carries the cluster's token, which a node trusts with the
// caller's own X-Forwarded-* (its ports' proxy routes hand them to the
// service): the gateway passes them on, the caller's address added.
func TestAPICallsKeepTheirForwardedHeaders(t *testing.T) {
	c := newCluster(t, "n1")
	gw := c.gateway(t)
	call(t, "PUT", gw.URL+"/v1/sandboxes/web", "{}")
	req, _ := http.NewRequest("GET", gw.URL+"/v1/sandboxes/web/ports/8000/proxy/page", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Forwarded-Host", "8000-web-abcdefgh.front.example")
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	node := c.nodes["n1"]
	node.mu.Lock()
	h := node.headers
	node.mu.Unlock()
	if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "6.6.6.6, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the caller's with its address added", got)
	}
	if h.Get("X-Forwarded-Host") != "8000-web-abcdefgh.front.example" || h.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("X-Forwarded-Host %q, -Proto %q: the caller's must pass", h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"))
	}

	// Without them, the gateway's own.
	req.Header.Del("X-Forwarded-For")
	req.Header.Del("X-Forwarded-Host")
	req.Header.Del("X-Forwarded-Proto")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	node.mu.Lock()
	h = node.headers
	node.mu.Unlock()
	if h.Get("X-Forwarded-For") != "127.0.0.1" || h.Get("X-Forwarded-Host") != req.URL.Host || h.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-* %q %q %q", h.Get("X-Forwarded-For"), h.Get("X-Forwarded-Host"), h.Get("X-Forwarded-Proto"))
	}
}
