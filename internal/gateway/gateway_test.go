package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex/fullduplextest"
	"github.com/sandboxd/sandboxd/internal/gateway"
	"github.com/sandboxd/sandboxd/internal/gateway/gatewaytest"
	"github.com/sandboxd/sandboxd/internal/httpapi"
)

// These tests drive the gateway against small HTTP servers standing in
// for nodes, and an in-memory directory: what is under test is the
// gateway's placement and forwarding. The real cluster (apiserver, real
// nodes) is covered end to end in e2e/cluster_test.go.

const token = "t0ken"

// fakeNode answers the routes the tests use, remembering what it saw.
type fakeNode struct {
	name string
	srv  *httptest.Server

	mu      sync.Mutex
	created map[string]int
	stopped []string
	headers http.Header
	// release ends a stream the test holds open.
	release chan struct{}
	// moves are the move steps the node saw ("hold x", "move-in x
	// from n1", ...); failMoveIn makes its move-ins fail, as a node that
	// dies while it receives the files.
	moves      []string
	failMoveIn bool
}

func startNode(t *testing.T, name string) *fakeNode {
	n := &fakeNode{name: name, created: map[string]int{}, release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.created[r.PathValue("id")]++
		n.headers = r.Header.Clone()
		n.mu.Unlock()
		writeJSON(w, http.StatusCreated, api.Sandbox{ID: r.PathValue("id"), Status: api.StatusRunning})
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, api.Sandbox{ID: r.PathValue("id"), Status: api.StatusRunning})
	})
	mux.HandleFunc("DELETE /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		delete(n.created, r.PathValue("id"))
		n.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	// The move steps of a drain (kubenode/move.go), without files.
	mux.HandleFunc("/v1/cluster/sandboxes/{id}/{step}", func(w http.ResponseWriter, r *http.Request) {
		id, step := r.PathValue("id"), r.PathValue("step")
		var req struct{ Node, From string }
		json.NewDecoder(r.Body).Decode(&req)
		n.mu.Lock()
		defer n.mu.Unlock()
		n.moves = append(n.moves, strings.TrimSpace(fmt.Sprintf("%s %s %s %s%s", r.Method, step, id, req.Node, req.From)))
		switch {
		case step == "move-in" && n.failMoveIn:
			writeJSON(w, http.StatusInternalServerError, api.Error{Code: api.CodeInternal, Message: "receiving the files: connection reset"})
			return
		case step == "move-in":
			n.created[id]++
		case step == "finish":
			delete(n.created, id)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/stop", func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.stopped = append(n.stopped, r.PathValue("id"))
		n.mu.Unlock()
		writeJSON(w, http.StatusOK, api.Sandbox{ID: r.PathValue("id"), Status: api.StatusStopped})
	})
	mux.HandleFunc("POST /v1/sandboxes/{id}/exec/stream", func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.created[r.PathValue("id")]++
		n.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: stdout\ndata: {\"data\":\"first\"}\n\n")
		w.(http.Flusher).Flush()
		<-n.release // held open until the test has read the first event
		fmt.Fprint(w, "event: complete\ndata: {\"exitCode\":0}\n\n")
	})
	mux.HandleFunc("GET /v1/sandboxes/{id}/terminal", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, b, err := c.Read(r.Context())
		if err != nil {
			return
		}
		c.Write(r.Context(), typ, append([]byte(n.name+":"), b...))
		c.Close(websocket.StatusNormalClosure, "")
	})
	mux.HandleFunc("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) { n.list(w, r) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Preview hosts and the rest: say who answered, with what Host.
		n.mu.Lock()
		n.headers = r.Header.Clone()
		n.mu.Unlock()
		fmt.Fprintf(w, "%s %s %s", n.name, r.Host, r.URL.Path)
	})
	n.srv = httptest.NewServer(mux)
	t.Cleanup(n.srv.Close)
	return n
}

// list pages the node's created sandboxes as a daemon does: by ID, after
// the token's position.
func (n *fakeNode) list(w http.ResponseWriter, r *http.Request) {
	n.mu.Lock()
	var ids []string
	for id := range n.created {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	slices.Sort(ids)
	limit := api.MaxListLimit
	fmt.Sscan(r.URL.Query().Get("limit"), &limit)
	if tok := r.URL.Query().Get("pageToken"); tok != "" {
		i := 0
		for i < len(ids) && httpapi.PageToken(ids[i]) != tok {
			i++
		}
		if i == len(ids) {
			// A position between this node's IDs: the first one after it.
			ids = afterToken(ids, tok)
		} else {
			ids = ids[i+1:]
		}
	}
	out := api.SandboxList{Sandboxes: []api.Sandbox{}}
	for _, id := range ids {
		if len(out.Sandboxes) == limit {
			out.NextPageToken = httpapi.PageToken(out.Sandboxes[limit-1].ID)
			break
		}
		out.Sandboxes = append(out.Sandboxes, api.Sandbox{ID: id, Status: api.StatusRunning})
	}
	writeJSON(w, http.StatusOK, out)
}

// afterToken finds the IDs after a token's position by trying every
// candidate position: the tests' IDs are short.
func afterToken(ids []string, tok string) []string {
	for _, cand := range allIDs {
		if httpapi.PageToken(cand) == tok {
			for i, id := range ids {
				if id > cand {
					return ids[i:]
				}
			}
			return nil
		}
	}
	return nil
}

var allIDs = func() []string {
	var out []string
	for i := range 30 {
		out = append(out, fmt.Sprintf("sb-%02d", i))
	}
	return out
}()

type cluster struct {
	dir      *gatewaytest.Directory
	nodes    map[string]*fakeNode
	gateways []*gateway.Server
}

func newCluster(t *testing.T, names ...string) *cluster {
	c := &cluster{dir: gatewaytest.New(), nodes: map[string]*fakeNode{}}
	for _, name := range names {
		n := startNode(t, name)
		c.nodes[name] = n
		c.dir.Add(gateway.Node{Name: name, URL: n.srv.URL, Ready: true, ReportedAt: time.Now()})
	}
	return c
}

func (c *cluster) gateway(t *testing.T) *httptest.Server {
	s := gateway.New(gateway.Options{Directory: c.dir, Token: token, PreviewDomain: "example.test",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c.gateways = append(c.gateways, s)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

func call(t *testing.T, method, url string, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func errorCode(t *testing.T, b []byte) api.Code {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("not an error: %s", b)
	}
	return e.Code
}

func TestPlacementSpreadsAndAnswersNode(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	gw := c.gateway(t)
	for i := range 6 {
		resp, b := call(t, "PUT", gw.URL+"/v1/sandboxes/"+allIDs[i], "{}")
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create: %s %s", resp.Status, b)
		}
		var sb api.Sandbox
		json.Unmarshal(b, &sb)
		if sb.Node == "" || c.dir.PlacedOn(allIDs[i]) != sb.Node {
			t.Fatalf("answer's node %q, placed on %q", sb.Node, c.dir.PlacedOn(allIDs[i]))
		}
	}
	for name, n := range c.nodes {
		if len(n.created) != 2 {
			t.Errorf("node %s has %d sandboxes, want 2 of 6 on 3 nodes", name, len(n.created))
		}
	}
	// A later call about one goes to its node, wherever it lands.
	resp, b := call(t, "GET", gw.URL+"/v1/sandboxes/"+allIDs[0], "")
	var sb api.Sandbox
	json.Unmarshal(b, &sb)
	if resp.StatusCode != 200 || sb.Node != c.dir.PlacedOn(allIDs[0]) {
		t.Fatalf("get: %s %s", resp.Status, b)
	}
}

func TestPlacementFitsAndCapacity(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	c.dir.Update("n1", func(n *gateway.Node) { n.MemoryBudget, n.MemoryUsed = 4<<30, 3<<30 })
	c.dir.Update("n2", func(n *gateway.Node) { n.Cordoned = true })
	gw := c.gateway(t)
	// 2 GiB fits nowhere: n1's budget is short, n2 is cordoned.
	resp, b := call(t, "PUT", gw.URL+"/v1/sandboxes/big", `{"limits":{"memoryBytes":2147483648}}`)
	if resp.StatusCode != 503 || errorCode(t, b) != api.CodeCapacityExceeded || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("create past every node's budget: %s %s", resp.Status, b)
	}
	resp, b = call(t, "PUT", gw.URL+"/v1/sandboxes/small", `{"limits":{"memoryBytes":536870912}}`)
	if resp.StatusCode != 201 || c.dir.PlacedOn("small") != "n1" {
		t.Fatalf("create that fits n1: %s %s", resp.Status, b)
	}
	// Unknown sandboxes are not created by reads.
	resp, b = call(t, "GET", gw.URL+"/v1/sandboxes/nope", "")
	if resp.StatusCode != 404 || errorCode(t, b) != api.CodeSandboxNotFound {
		t.Fatalf("get of an unknown sandbox: %s %s", resp.Status, b)
	}
	resp, b = call(t, "POST", gw.URL+"/v1/sandboxes/nope/stop", "")
	if resp.StatusCode != 404 || errorCode(t, b) != api.CodeSandboxNotFound {
		t.Fatalf("stop of an unknown sandbox: %s %s", resp.Status, b)
	}
}

func TestTwoGatewaysCreateOneSandbox(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	gws := []*httptest.Server{c.gateway(t), c.gateway(t)}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			resp, b := call(t, "PUT", gws[i%2].URL+"/v1/sandboxes/race", "{}")
			if resp.StatusCode/100 != 2 {
				t.Errorf("create: %s %s", resp.Status, b)
			}
		})
	}
	wg.Wait()
	on := 0
	for _, n := range c.nodes {
		if n.created["race"] > 0 {
			on++
		}
	}
	if on != 1 {
		t.Fatalf("the sandbox reached %d nodes, want 1", on)
	}
}

func TestForwardStreamsAndWebSockets(t *testing.T) {
	c := newCluster(t, "n1")
	gw := c.gateway(t)
	n := c.nodes["n1"]

	// The first event arrives while the node still holds the stream open:
	// nothing is buffered.
	req, _ := http.NewRequest("POST", gw.URL+"/v1/sandboxes/s1/exec/stream", strings.NewReader(`{"command":"x"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	got := ""
	for !strings.Contains(got, "first") {
		k, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatalf("reading the stream: %v (got %q)", err, got)
		}
		got += string(buf[:k])
	}
	close(n.release)
	rest, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(rest), "complete") {
		t.Fatalf("stream's end: %q", rest)
	}
	if c.dir.PlacedOn("s1") != "n1" {
		t.Fatalf("an exec on a new ID did not place it")
	}

	// A WebSocket through the gateway, authenticated the browser's way.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(gw.URL, "http", "ws", 1)+"/v1/sandboxes/s1/terminal",
		&websocket.DialOptions{Subprotocols: []string{api.TokenSubprotocolPrefix + token}})
	if err != nil {
		t.Fatalf("websocket through the gateway: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	_, b, err := ws.Read(ctx)
	if err != nil || string(b) != "n1:hi" {
		t.Fatalf("echo: %q %v", b, err)
	}
}

func TestPreviewHostsAndForwardedHeaders(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	gw := c.gateway(t)
	call(t, "PUT", gw.URL+"/v1/sandboxes/web", "{}")
	node := c.nodes[c.dir.PlacedOn("web")]
	req, _ := http.NewRequest("GET", gw.URL+"/page", nil)
	req.Host = "8000-web-abcdefgh.example.test"
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := node.name + " 8000-web-abcdefgh.example.test /page"; string(b) != want {
		t.Fatalf("preview answered %q, want %q", b, want)
	}
	node.mu.Lock()
	h := node.headers
	node.mu.Unlock()
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q: the caller's own must be replaced", got)
	}
	if h.Get("X-Secret") != "" {
		t.Errorf("a header named by Connection reached the node")
	}
	if h.Get("X-Forwarded-Host") != req.Host {
		t.Errorf("X-Forwarded-Host %q", h.Get("X-Forwarded-Host"))
	}
	// An unknown sandbox's preview host, and a name that is not one.
	for _, host := range []string{"8000-nope-abcdefgh.example.test", "junk.example.test"} {
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || errorCode(t, b) != api.CodePreviewNotFound {
			t.Errorf("%s: %s %s", host, resp.Status, b)
		}
	}
}

func TestNodeUnavailable(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	gw := c.gateway(t)
	call(t, "PUT", gw.URL+"/v1/sandboxes/a", "{}")
	call(t, "PUT", gw.URL+"/v1/sandboxes/b", "{}")
	// One node's Lease expires; the other is killed before it does.
	c.dir.Update(c.dir.PlacedOn("a"), func(n *gateway.Node) { n.Ready = false })
	c.nodes[c.dir.PlacedOn("b")].srv.Close()
	call(t, "GET", gw.URL+"/v1/nodes", "") // reads the nodes afresh (else they are at most 1 s old)
	for _, id := range []string{"a", "b"} {
		resp, b := call(t, "POST", gw.URL+"/v1/sandboxes/"+id+"/exec", `{"command":"true"}`)
		if resp.StatusCode != 503 || errorCode(t, b) != api.CodeNodeUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: %s %s", id, resp.Status, b)
		}
	}
}

// A call whose node cannot be reached is answered NODE_UNAVAILABLE on a
// connection that stays usable, even when its body arrives after the
// answer: the server must not be left reading the body's end behind the
// connection's next request (golang/go#68560: with full duplex, that read
// panicked "invalid concurrent Body.Read call" and dropped the connection).
func TestNodeUnavailableKeepsTheConnection(t *testing.T) {
	c := newCluster(t, "n1")
	gw := c.gateway(t)
	gw.Config.ErrorLog = fullduplextest.ErrorLog(t)
	call(t, "PUT", gw.URL+"/v1/sandboxes/a", "{}")
	c.nodes["n1"].srv.Close()
	call(t, "GET", gw.URL+"/v1/nodes", "") // reads the nodes afresh

	auth := "Host: gw\r\nAuthorization: Bearer " + token
	answers := fullduplextest.KeepsConnection(t, gw.Listener.Addr().String(),
		"POST /v1/sandboxes/a/exec HTTP/1.1\r\nContent-Type: application/json\r\n"+auth, `{"command":"true"}`,
		"GET /v1/nodes HTTP/1.1\r\n"+auth)
	for i, a := range answers[:2] {
		if a.Status != 503 || errorCode(t, []byte(a.Body)) != api.CodeNodeUnavailable {
			t.Errorf("call %d: %d %s", i+1, a.Status, a.Body)
		}
	}
	if answers[2].Status != 200 {
		t.Errorf("nodes after them: %d", answers[2].Status)
	}
}

func TestListMergesPages(t *testing.T) {
	c := newCluster(t, "n1", "n2", "n3")
	gw := c.gateway(t)
	for _, id := range allIDs[:10] {
		call(t, "PUT", gw.URL+"/v1/sandboxes/"+id, "{}")
	}
	var got []string
	tok := ""
	for range 20 {
		url := gw.URL + "/v1/sandboxes?limit=3"
		if tok != "" {
			url += "&pageToken=" + tok
		}
		resp, b := call(t, "GET", url, "")
		if resp.StatusCode != 200 {
			t.Fatalf("list: %s %s", resp.Status, b)
		}
		var page api.SandboxList
		json.Unmarshal(b, &page)
		for _, sb := range page.Sandboxes {
			if sb.Node != c.dir.PlacedOn(sb.ID) {
				t.Errorf("%s: node %q, placed on %q", sb.ID, sb.Node, c.dir.PlacedOn(sb.ID))
			}
			got = append(got, sb.ID)
		}
		if tok = page.NextPageToken; tok == "" {
			break
		}
	}
	if diff := cmp.Diff(allIDs[:10], got); diff != "" {
		t.Fatalf("pages (-want +got):\n%s", diff)
	}
}

func TestNodesDrainUncordon(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	gw := c.gateway(t)
	for _, id := range allIDs[:4] {
		call(t, "PUT", gw.URL+"/v1/sandboxes/"+id, "{}")
	}
	var onN1 []string
	for _, id := range allIDs[:4] {
		if c.dir.PlacedOn(id) == "n1" {
			onN1 = append(onN1, id)
		}
	}
	resp, b := call(t, "POST", gw.URL+"/v1/nodes/n1/drain", "")
	var dr api.DrainResult
	json.Unmarshal(b, &dr)
	if resp.StatusCode != 200 || dr.Node.State != api.NodeCordoned || len(dr.Stopped) != 2 || len(dr.Moved) != 2 || len(dr.Failed) != 0 {
		t.Fatalf("drain: %s %s", resp.Status, b)
	}
	for i, id := range onN1 {
		if dr.Moved[i] != (api.DrainMove{ID: id, Node: "n2"}) || c.dir.PlacedOn(id) != "n2" {
			t.Errorf("%s: moved %+v, placed on %s", id, dr.Moved[i], c.dir.PlacedOn(id))
		}
		want := []string{"POST hold " + id + " n2", "POST finish " + id}
		if got := c.nodes["n1"].movesOf(id); !slices.Equal(got, want) {
			t.Errorf("%s: n1 saw %q, want %q", id, got, want)
		}
		if got := c.nodes["n2"].movesOf(id); !slices.Equal(got, []string{"POST move-in " + id + " n1"}) {
			t.Errorf("%s: n2 saw %q", id, got)
		}
	}
	if c.nodes["n1"].count() != 0 || c.nodes["n2"].count() != 4 {
		t.Errorf("after the drain n1 has %d sandboxes, n2 %d", c.nodes["n1"].count(), c.nodes["n2"].count())
	}
	// New sandboxes go elsewhere while n1 is cordoned.
	call(t, "PUT", gw.URL+"/v1/sandboxes/after", "{}")
	if c.dir.PlacedOn("after") != "n2" {
		t.Fatalf("placed on cordoned %s", c.dir.PlacedOn("after"))
	}
	resp, b = call(t, "POST", gw.URL+"/v1/nodes/n1/uncordon", "")
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"state":"ready"`) {
		t.Fatalf("uncordon: %s %s", resp.Status, b)
	}
	resp, b = call(t, "GET", gw.URL+"/v1/nodes", "")
	var nl api.NodeList
	json.Unmarshal(b, &nl)
	if resp.StatusCode != 200 || len(nl.Nodes) != 2 || nl.Nodes[0].Name != "n1" {
		t.Fatalf("nodes: %s %s", resp.Status, b)
	}
	resp, b = call(t, "POST", gw.URL+"/v1/nodes/zz/drain", "")
	if resp.StatusCode != 404 || errorCode(t, b) != api.CodeNodeNotFound {
		t.Fatalf("drain of an unknown node: %s %s", resp.Status, b)
	}
}

// TestDrainMoveFails: the target fails while it receives the files (as a
// node that dies mid-move): the sandbox stays placed on its node, which
// keeps it and releases the hold; the target keeps no copy. A drain run
// again, once the target works, moves it.
func TestDrainMoveFails(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	c.dir.Update("n2", func(n *gateway.Node) { n.Cordoned = true })
	gw := c.gateway(t)
	call(t, "PUT", gw.URL+"/v1/sandboxes/a", "{}")
	c.dir.Update("n2", func(n *gateway.Node) { n.Cordoned = false })
	c.nodes["n2"].failMoveIn = true
	resp, b := call(t, "POST", gw.URL+"/v1/nodes/n1/drain", "")
	var dr api.DrainResult
	json.Unmarshal(b, &dr)
	if resp.StatusCode != 200 || len(dr.Moved) != 0 || !strings.Contains(dr.Failed["a"], "copying it to n2") {
		t.Fatalf("drain: %s %s", resp.Status, b)
	}
	if c.dir.PlacedOn("a") != "n1" || c.nodes["n1"].count() != 1 || c.nodes["n2"].count() != 0 {
		t.Fatalf("after a failed move: placed on %s, n1 has %d, n2 %d", c.dir.PlacedOn("a"), c.nodes["n1"].count(), c.nodes["n2"].count())
	}
	if got := c.nodes["n1"].movesOf("a"); !slices.Equal(got, []string{"POST hold a n2", "DELETE hold a"}) {
		t.Fatalf("n1 saw %q", got)
	}
	c.nodes["n2"].failMoveIn = false
	_, b = call(t, "POST", gw.URL+"/v1/nodes/n1/drain", "")
	dr = api.DrainResult{}
	json.Unmarshal(b, &dr)
	if len(dr.Moved) != 1 || c.dir.PlacedOn("a") != "n2" {
		t.Fatalf("drain run again: %s, placed on %s", b, c.dir.PlacedOn("a"))
	}
}

// TestDrainFinishesAFlippedMove: a gateway that died after the placement
// flipped left the old copy on the drained node; a drain run again
// removes it there and copies nothing.
func TestDrainFinishesAFlippedMove(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	c.dir.Update("n2", func(n *gateway.Node) { n.Cordoned = true })
	gw := c.gateway(t)
	call(t, "PUT", gw.URL+"/v1/sandboxes/a", "{}")
	c.dir.Update("n2", func(n *gateway.Node) { n.Cordoned = false })
	c.nodes["n2"].created["a"] = 1
	if err := c.dir.Move(context.Background(), "a", "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	_, b := call(t, "POST", gw.URL+"/v1/nodes/n1/drain", "")
	var dr api.DrainResult
	json.Unmarshal(b, &dr)
	if len(dr.Moved) != 1 || dr.Moved[0].Node != "n2" || c.nodes["n1"].count() != 0 || len(c.nodes["n2"].movesOf("a")) != 0 {
		t.Fatalf("drain: %s; n1 has %d; n2 saw %q", b, c.nodes["n1"].count(), c.nodes["n2"].movesOf("a"))
	}
}

func (n *fakeNode) movesOf(id string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, m := range n.moves {
		if f := strings.Fields(m); len(f) > 2 && f[2] == id {
			out = append(out, m)
		}
	}
	return out
}

func (n *fakeNode) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.created)
}

func TestAuthAndHostileInput(t *testing.T) {
	c := newCluster(t, "n1")
	gw := c.gateway(t)
	resp, err := http.Post(gw.URL+"/v1/sandboxes/x/exec", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || c.dir.Placements() != 0 {
		t.Fatalf("unauthenticated exec: %s, placed %d", resp.Status, c.dir.Placements())
	}
	for path, code := range map[string]api.Code{
		"/v1/sandboxes/Bad_ID/exec": api.CodeInvalidSandboxID,
		"/v1/sandboxes/a/../b/exec": api.CodeNotFound,
		"/v1/volumes":               api.CodeNotFound,
	} {
		resp, b := call(t, "POST", gw.URL+path, "{}")
		if errorCode(t, b) != code {
			t.Errorf("%s: %s %s, want %s", path, resp.Status, b, code)
		}
	}
	resp, b := call(t, "PUT", gw.URL+"/v1/sandboxes/big", strings.Repeat(" ", 1<<20+1))
	if resp.StatusCode != 413 || errorCode(t, b) != api.CodeRequestTooLarge || c.dir.Placements() != 0 {
		t.Fatalf("oversized create: %s %s", resp.Status, b)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// followedDir is the in-memory directory with a watch the test drives.
type followedDir struct {
	*gatewaytest.Directory
	events chan gateway.PlacementEvent
}

func (d followedDir) FollowPlacements(ctx context.Context, fn func(gateway.PlacementEvent)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-d.events:
			fn(ev)
		}
	}
}

// TestFollowedPlacementsNeedNoTTL: a gateway that follows the directory's
// watch routes by a move made through another gateway as soon as the
// watch reports it, where its 5 s placement cache would still name the
// old node.
func TestFollowedPlacementsNeedNoTTL(t *testing.T) {
	c := newCluster(t, "n1", "n2")
	c.dir.Update("n2", func(n *gateway.Node) { n.Cordoned = true })
	dir := followedDir{Directory: c.dir, events: make(chan gateway.PlacementEvent)}
	s := gateway.New(gateway.Options{Directory: dir, Token: token, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	gw := httptest.NewServer(s)
	t.Cleanup(gw.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Follow(ctx)
	call(t, "PUT", gw.URL+"/v1/sandboxes/a", "{}") // placed on n1, cached
	dir.events <- gateway.PlacementEvent{Sync: true, All: map[string]string{"a": "n1"}}
	if err := c.dir.Move(ctx, "a", "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	dir.events <- gateway.PlacementEvent{ID: "a", Node: "n2"}
	dir.events <- gateway.PlacementEvent{ID: "b", Node: "n1"} // handled once "a" is
	_, b := call(t, "GET", gw.URL+"/v1/sandboxes/a", "")
	if !strings.Contains(string(b), `"node":"n2"`) {
		t.Fatalf("after the watch reported the move: %s", b)
	}
	dir.events <- gateway.PlacementEvent{ID: "a", Deleted: true}
	dir.events <- gateway.PlacementEvent{ID: "b", Deleted: true}
	c.dir.Release(ctx, "a")
	resp, b := call(t, "GET", gw.URL+"/v1/sandboxes/a", "")
	if resp.StatusCode != 404 {
		t.Fatalf("after the watch reported the delete: %s %s", resp.Status, b)
	}
}
