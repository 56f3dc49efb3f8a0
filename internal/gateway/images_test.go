package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/gateway"
	"github.com/sandboxd/sandboxd/internal/gateway/gatewaytest"
)

// imageNode is a stand-in node's image routes: what it answers and what
// it was asked.
type imageNode struct {
	mu     sync.Mutex
	calls  []string // "METHOD path?query body"
	auth   string
	images []api.Image
	fail   *api.Error // the answer to imports and removes
}

func (n *imageNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, fmt.Sprintf("%s %s?%s %s", r.Method, r.URL.Path, r.URL.RawQuery, b))
	n.auth = r.Header.Get("Authorization")
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == "GET" && r.URL.Path == "/v1/images":
		json.NewEncoder(w).Encode(api.ImageList{Images: n.images})
	case n.fail != nil:
		w.WriteHeader(n.fail.Code.HTTPStatus())
		json.NewEncoder(w).Encode(n.fail)
	case r.Method == "DELETE":
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(api.Image{Names: []string{"x"}, Digest: "sha256:aa", Source: "docker-archive"})
	}
}

func (n *imageNode) asked() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.calls)
}

// TestImagesFanOut: imports go to every ready, uncordoned node with the
// caller's credentials, spooled within the size limit and removed after;
// a node's failure is the answer, naming what the others did; lists merge
// by digest with the nodes that have each image; removes go to cordoned
// nodes too; builds are refused.
func TestImagesFanOut(t *testing.T) {
	dir := gatewaytest.New()
	host := api.Image{Names: []string{"host"}, Source: "host"}
	a := api.Image{Names: []string{"a"}, Digest: "sha256:aa", Source: "docker-archive"}
	nodes := map[string]*imageNode{
		"n1": {images: []api.Image{host, a}},
		"n2": {images: []api.Image{host}, fail: &api.Error{Code: api.CodeInvalidImage, Message: "bad layer"}},
		"n3": {images: []api.Image{a}},
		"n4": {},
	}
	for name, n := range nodes {
		srv := httptest.NewServer(n)
		t.Cleanup(srv.Close)
		dir.Add(gateway.Node{Name: name, URL: srv.URL, Ready: name != "n4", Cordoned: name == "n3", ReportedAt: time.Now()})
	}
	spool := t.TempDir()
	gw := httptest.NewServer(gateway.New(gateway.Options{Directory: dir, Token: token, MaxImageBytes: 100, SpoolDir: spool,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(gw.Close)
	spooled := func() {
		t.Helper()
		if left, _ := os.ReadDir(spool); len(left) != 0 {
			t.Errorf("spool files left: %v", left)
		}
	}

	resp, b := call(t, "POST", gw.URL+"/v1/images/import?name=x", strings.Repeat("z", 101))
	if resp.StatusCode != 413 || errorCode(t, b) != api.CodeImageTooLarge || len(nodes["n1"].asked()) != 0 {
		t.Errorf("oversized import: %s %s, nodes asked %v", resp.Status, b, nodes["n1"].asked())
	}
	spooled()

	resp, b = call(t, "POST", gw.URL+"/v1/images/import?name=x", "archive")
	var e api.Error
	json.Unmarshal(b, &e)
	if resp.StatusCode != 400 || e.Code != api.CodeInvalidImage || !strings.Contains(e.Message, "n2") ||
		fmt.Sprint(e.Details["succeeded"]) != "[n1]" || e.Details["failed"].(map[string]any)["n2"] == nil {
		t.Errorf("import that fails on n2: %s %s", resp.Status, b)
	}
	if resp.Header.Get("X-Sandboxd-Cordoned-Nodes") != "n3" || resp.Header.Get("X-Sandboxd-Unavailable-Nodes") != "n4" {
		t.Errorf("skipped nodes' headers: %v", resp.Header)
	}
	if got := nodes["n1"].asked(); !slices.Equal(got, []string{"POST /v1/images/import?name=x archive"}) || nodes["n1"].auth != "Bearer "+token {
		t.Errorf("n1 was asked %q with %q", got, nodes["n1"].auth)
	}
	if len(nodes["n3"].asked()) != 0 {
		t.Errorf("the cordoned node was asked %q", nodes["n3"].asked())
	}
	spooled()

	nodes["n2"].mu.Lock()
	nodes["n2"].fail = nil
	nodes["n2"].mu.Unlock()
	resp, b = call(t, "POST", gw.URL+"/v1/images/pull", `{"ref":"example.com/x"}`)
	var img api.Image
	json.Unmarshal(b, &img)
	if resp.StatusCode != 201 || !slices.Equal(img.Nodes, []string{"n1", "n2"}) {
		t.Errorf("pull: %s %s", resp.Status, b)
	}

	resp, b = call(t, "GET", gw.URL+"/v1/images", "")
	var l api.ImageList
	json.Unmarshal(b, &l)
	if resp.StatusCode != 200 || len(l.Images) != 2 || l.Images[0].Source != "host" ||
		!slices.Equal(l.Images[0].Nodes, []string{"n1", "n2"}) || !slices.Equal(l.Images[1].Nodes, []string{"n1", "n3"}) {
		t.Errorf("merged list: %s %s", resp.Status, b)
	}

	nodes["n1"].mu.Lock()
	nodes["n1"].fail = &api.Error{Code: api.CodeImageInUse, Message: "in use"}
	nodes["n1"].mu.Unlock()
	resp, b = call(t, "DELETE", gw.URL+"/v1/images/a", "")
	json.Unmarshal(b, &e)
	if resp.StatusCode != 409 || e.Code != api.CodeImageInUse || fmt.Sprint(e.Details["succeeded"]) != "[n2 n3]" {
		t.Errorf("remove in use on n1: %s %s", resp.Status, b)
	}

	for _, p := range []string{"/v1/images/build?name=b", "/v1/images/build-base"} {
		resp, b = call(t, "POST", gw.URL+p, "{}")
		if resp.StatusCode != 501 || errorCode(t, b) != api.CodeNotSupportedOnGateway {
			t.Errorf("%s: %s %s", p, resp.Status, b)
		}
	}
}

// TestImageJobsAreBoundedOnTheGateway: while a caller has
// api.MaxImageJobsPerTenant pulls in flight (its node has not answered
// them), its next import or pull is 429 TOO_MANY_IMAGE_JOBS at once,
// before anything is spooled or sent to a node; once they end, it is
// taken again.
func TestImageJobsAreBoundedOnTheGateway(t *testing.T) {
	dir := gatewaytest.New()
	arrived, release := make(chan struct{}, 8), make(chan struct{})
	var asked sync.Mutex
	imports := 0
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/images/pull" {
			arrived <- struct{}{}
			<-release
		} else {
			asked.Lock()
			imports++
			asked.Unlock()
		}
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(api.Image{Names: []string{"x"}, Digest: "sha256:aa"})
	}))
	t.Cleanup(node.Close)
	dir.Add(gateway.Node{Name: "n1", URL: node.URL, Ready: true, ReportedAt: time.Now()})
	gw := httptest.NewServer(gateway.New(gateway.Options{Directory: dir, Token: token, SpoolDir: t.TempDir(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(gw.Close)

	var wg sync.WaitGroup
	for range api.MaxImageJobsPerTenant {
		wg.Go(func() {
			// Not call(): t.Fatal belongs to the test's own goroutine.
			req, _ := http.NewRequest("POST", gw.URL+"/v1/images/pull", strings.NewReader(`{"ref":"example.com/x"}`))
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
		<-arrived
	}
	for _, path := range []string{"/v1/images/import?name=x", "/v1/images/pull"} {
		resp, b := call(t, "POST", gw.URL+path, `{"ref":"example.com/x"}`)
		if resp.StatusCode != http.StatusTooManyRequests || errorCode(t, b) != api.CodeTooManyImageJobs || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s past the bound: %s %s", path, resp.Status, b)
		}
	}
	asked.Lock()
	if imports != 0 {
		t.Errorf("a refused import reached the node")
	}
	asked.Unlock()
	close(release)
	wg.Wait()
	if resp, b := call(t, "POST", gw.URL+"/v1/images/import?name=x", "archive"); resp.StatusCode != http.StatusCreated {
		t.Errorf("an import once the pulls ended: %s %s", resp.Status, b)
	}
}
