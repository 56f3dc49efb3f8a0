package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
)

func TestExposeSendsTheOptionsAndPrintsTheURL(t *testing.T) {
	f := newFakeDaemon(t)
	var got api.ExposePortRequest
	f.HandleFunc("POST /v1/sandboxes/{id}/ports", func(w http.ResponseWriter, r *http.Request) {
		got = decodeBody[api.ExposePortRequest](t, r)
		writeJSON(w, 201, api.ExposedPort{Port: got.Port, URL: "http://8080-demo-tok.localhost:7070/"})
	})
	res := runCLI(t, f, cliRun{args: []string{"expose", "demo", "8080", "--name", "web", "--private", "--token", "tok"}})
	if res.code != 0 || res.stdout != "http://8080-demo-tok.localhost:7070/\n" {
		t.Fatalf("exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
	f2 := false
	if diff := cmp.Diff(api.ExposePortRequest{Port: 8080, Name: "web", Token: "tok", Public: &f2}, got); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

func TestExposeRefusesBadPortsWithoutAsking(t *testing.T) {
	f := newFakeDaemon(t)
	for _, port := range []string{"http", "80", "70000"} {
		res := runCLI(t, f, cliRun{args: []string{"expose", "demo", port}})
		if res.code != exitFailure {
			t.Errorf("port %s: exit %d", port, res.code)
		}
	}
	if log := f.requestLog(); len(log) != 0 {
		t.Errorf("requests sent: %v", log)
	}
}

func TestPortsTableAndJSON(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("GET /v1/sandboxes/{id}/ports", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.ExposedPortList{Ports: []api.ExposedPort{
			{Port: 3000, Name: "api", Public: true, URL: "http://3000-demo-a.localhost:7070/"},
			{Port: 8080, Public: false, URL: "http://8080-demo-b.localhost:7070/"},
		}})
	})
	res := runCLI(t, f, cliRun{args: []string{"ports", "demo"}})
	want := "PORT   NAME   ACCESS    URL\n" +
		"3000   api    public    http://3000-demo-a.localhost:7070/\n" +
		"8080   -      private   http://8080-demo-b.localhost:7070/\n"
	if res.code != 0 || res.stdout != want {
		t.Errorf("exit %d\n%s\nwant\n%s", res.code, res.stdout, want)
	}
	res = runCLI(t, f, cliRun{args: []string{"ports", "demo", "--json"}})
	if res.code != 0 || !strings.Contains(res.stdout, `"port": 3000`) {
		t.Errorf("json: %d %s", res.code, res.stdout)
	}
}

func TestUnexposeAndLink(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("DELETE /v1/sandboxes/{id}/ports/{port}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(204)
	})
	f.HandleFunc("POST /v1/sandboxes/{id}/ports/{port}/links", func(w http.ResponseWriter, r *http.Request) {
		req := decodeBody[api.PreviewLinkRequest](t, r)
		if req.ExpiresIn != 600000 {
			t.Errorf("expiresIn %d", req.ExpiresIn)
		}
		writeJSON(w, 201, api.PreviewLink{URL: "http://x/?sandboxd_link=v1.1.a"})
	})
	if res := runCLI(t, f, cliRun{args: []string{"unexpose", "demo", "8080"}}); res.code != 0 || res.stdout != "" {
		t.Errorf("unexpose: %+v", res)
	}
	if res := runCLI(t, f, cliRun{args: []string{"link", "demo", "8080", "--expires", "10m"}}); res.code != 0 || res.stdout != "http://x/?sandboxd_link=v1.1.a\n" {
		t.Errorf("link: %+v", res)
	}
	want := []string{"DELETE /v1/sandboxes/demo/ports/8080", "POST /v1/sandboxes/demo/ports/8080/links"}
	if diff := cmp.Diff(want, f.requestLog()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestExposeTakesTheAPITokenBeforeTheVerb: expose's own --token (the
// preview URL's) shadows the global --token after the verb; before it,
// --token is the API token, so both can be given.
func TestExposeTakesTheAPITokenBeforeTheVerb(t *testing.T) {
	f := newFakeDaemon(t)
	var got api.ExposePortRequest
	f.HandleFunc("POST /v1/sandboxes/{id}/ports", func(w http.ResponseWriter, r *http.Request) {
		got = decodeBody[api.ExposePortRequest](t, r)
		writeJSON(w, 201, api.ExposedPort{Port: got.Port, URL: "http://8080-demo-x.localhost:7070/"})
	})
	wrongEnv := map[string]string{"SANDBOX_TOKEN": "not-the-token"}
	for _, tt := range []struct {
		args    []string
		preview string
	}{
		{[]string{"--token", testToken, "expose", "demo", "8080", "--token", "tok"}, "tok"},
		{[]string{"--token=" + testToken, "expose", "demo", "8080"}, ""},
		{[]string{"--url", f.srv.URL, "--token", testToken, "expose", "demo", "8080", "--token=tok2"}, "tok2"},
	} {
		got = api.ExposePortRequest{}
		res := runCLI(t, f, cliRun{args: tt.args, env: wrongEnv})
		if res.code != 0 || got.Token != tt.preview {
			t.Errorf("%q: exit %d stderr %q, preview token %q, want %q", tt.args, res.code, res.stderr, got.Token, tt.preview)
		}
	}
}
