package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/gateway"
	"github.com/sandboxd/sandboxd/internal/gateway/gatewaytest"
)

// TestEventsMerge: GET /v1/events through the gateway carries every
// node's events whole, with the caller's own credentials, and ends with
// an error event when a node's stream ends.
func TestEventsMerge(t *testing.T) {
	dir := gatewaytest.New()
	end := make(chan struct{})   // ends n2's stream
	endN1 := make(chan struct{}) // ends n1's stream
	auths := make(chan string, 2)
	for _, name := range []string{"n1", "n2"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			auths <- r.Header.Get("Authorization")
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: created\ndata: {\"type\":\"created\",\"sandboxId\":\"from-%s\"}\n\n", name)
			w.(http.Flusher).Flush()
			if name == "n2" {
				<-end
			} else {
				<-endN1
			}
		}))
		t.Cleanup(srv.Close)
		dir.Add(gateway.Node{Name: name, URL: srv.URL, Ready: true, ReportedAt: time.Now()})
	}
	gw := httptest.NewServer(gateway.New(gateway.Options{Directory: dir, Token: token,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(gw.Close)
	defer close(end)
	req, _ := http.NewRequest("GET", gw.URL+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for range 2 {
		if a := <-auths; a != "Bearer "+token {
			t.Errorf("a node was asked with %q, not the caller's credentials", a)
		}
	}
	var got []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			got = append(got, d)
			if len(got) == 2 {
				close(endN1) // both nodes' events are in: end n1's stream
			}
		}
	}
	all := strings.Join(got, "\n")
	// n1's stream ends after its event: the merged stream ends with an
	// error event naming it.
	if len(got) != 3 || !strings.Contains(all, "from-n1") || !strings.Contains(all, "from-n2") ||
		!strings.Contains(got[2], "NODE_UNAVAILABLE") || !strings.Contains(got[2], "n1") {
		t.Errorf("merged events: %q", got)
	}
}
