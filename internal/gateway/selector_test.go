package gateway_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/gateway"
)

func TestPlacementHonoursNodeSelector(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	c.dir.Update("n2", func(n *gateway.Node) { n.Labels = map[string]string{"gpu": "a100", "zone": "b"} })
	c.dir.Update("n3", func(n *gateway.Node) { n.Labels = map[string]string{"gpu": "a100", "zone": "c"}; n.Cordoned = true })
	gw := c.gateway(t)

	for i := range 3 {
		resp, b := call(t, "PUT", gw.URL+"/v1/sandboxes/"+allIDs[i], `{"nodeSelector":{"gpu":"a100"}}`)
		var sb api.Sandbox
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &sb) != nil || sb.Node != "n2" {
			t.Fatalf("create with gpu=a100: %d %s, want on n2 (n3 is cordoned)", resp.StatusCode, b)
		}
	}
	for _, c2 := range []struct {
		body   string
		status int
		code   api.Code
	}{
		{`{"nodeSelector":{"gpu":"h100"}}`, 400, api.CodeNoMatchingNode},
		{`{"nodeSelector":{"gpu":"a100","zone":"c"}}`, 503, api.CodeCapacityExceeded}, // n3 matches but is cordoned
		{`{"nodeSelector":{"-bad":"x"}}`, 400, api.CodeValidationFailed},
		{`{"nodeSelector":{"gpu":"bad value"}}`, 400, api.CodeValidationFailed},
	} {
		resp, b := call(t, "PUT", gw.URL+"/v1/sandboxes/"+allIDs[10], c2.body)
		if resp.StatusCode != c2.status || errorCode(t, b) != c2.code {
			t.Errorf("%s: %d %s, want %d %s", c2.body, resp.StatusCode, b, c2.status, c2.code)
		}
	}
	if got := c.dir.PlacedOn(allIDs[10]); got != "" {
		t.Errorf("a refused create was placed on %s", got)
	}
	resp, b := call(t, "GET", gw.URL+"/v1/nodes", "")
	var nl api.NodeList
	if resp.StatusCode != 200 || json.Unmarshal(b, &nl) != nil || len(nl.Nodes) != 3 || nl.Nodes[1].Labels["zone"] != "b" {
		t.Errorf("nodes list their labels: %s", b)
	}
}
