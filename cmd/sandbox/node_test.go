package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
)

// nodeDaemon answers the gateway's /v1/nodes routes for two nodes.
func nodeDaemon(t *testing.T) *fakeDaemon {
	f := newFakeDaemon(t)
	beat := time.Now().Add(-2 * time.Second)
	nodes := []api.Node{
		{Name: "node-a", URL: "http://10.0.0.1:7070", State: api.NodeReady, Running: 3, Total: 5, MaxRunning: 10,
			MemoryBudgetBytes: 8 << 30, MemoryUsedBytes: 3 << 30, HeartbeatAt: beat},
		{Name: "node-b", URL: "http://10.0.0.2:7070", State: api.NodeUnavailable, Total: 2, HeartbeatAt: beat.Add(-time.Minute)},
	}
	f.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.NodeList{Nodes: nodes})
	})
	f.HandleFunc("POST /v1/nodes/{name}/drain", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != "node-a" {
			writeJSON(w, 404, api.Error{Code: api.CodeNodeNotFound, Message: "no such node: " + r.PathValue("name")})
			return
		}
		n := nodes[0]
		n.State, n.Cordoned = api.NodeCordoned, true
		writeJSON(w, 200, api.DrainResult{Node: n, Stopped: []string{"x"}, Moved: []api.DrainMove{{ID: "x", Node: "node-b"}, {ID: "y", Node: "node-c"}},
			Failed: map[string]string{"z": "copying it to node-b: IMAGE_NOT_FOUND: image base"}})
	})
	f.HandleFunc("POST /v1/nodes/{name}/uncordon", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, nodes[0])
	})
	return f
}

func TestNodeCommands(t *testing.T) {
	f := nodeDaemon(t)
	res := runCLI(t, f, cliRun{args: []string{"node", "ls"}})
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") ||
		!strings.Contains(lines[1], "ready") || !strings.Contains(lines[1], "3/10") || !strings.Contains(lines[1], "3Gi/8Gi") ||
		!strings.Contains(lines[2], "unavailable") {
		t.Errorf("node ls: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"node", "ls", "--json"}})
	if res.code != 0 || !strings.HasPrefix(res.stdout, "{\n  \"nodes\": [") || !strings.Contains(res.stdout, `"state": "unavailable"`) {
		t.Errorf("node ls --json: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"node", "drain", "node-a"}})
	if res.code != exitFailure || res.stdout != "node-a cordoned; 1 sandboxes stopped, 2 moved\nmoved x to node-b\nmoved y to node-c\n" ||
		res.stderr != "not moved z: copying it to node-b: IMAGE_NOT_FOUND: image base\n" {
		t.Errorf("node drain: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"node", "drain", "nope"}})
	if res.code != exitFailure || !strings.Contains(res.stderr, "NODE_NOT_FOUND") {
		t.Errorf("node drain of an unknown node: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"node", "uncordon", "node-a"}})
	if res.code != 0 || res.stdout != "node-a ready\n" {
		t.Errorf("node uncordon: %+v", res)
	}
}
