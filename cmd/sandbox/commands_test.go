package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sandboxd/sandboxd/api"
)

func TestCreateFlagsMakeTheOptions(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want api.SandboxOptions
	}{
		{"no options", []string{"create", "demo"}, nil, api.SandboxOptions{}},
		{
			"README example",
			[]string{"create", "offline", "--network", "none", "--memory", "256Mi", "--pids", "128"},
			nil,
			api.SandboxOptions{
				Limits:  &api.Limits{MemoryBytes: 256 << 20, Pids: 128},
				Network: &api.NetworkOptions{Mode: api.NetworkNone},
			},
		},
		{
			"every flag",
			[]string{"create", "ml", "--image", "base", "--env", "A=1", "-e", "TOKEN", "--label", "team=ml", "-l", "tier=gpu",
				"--memory", "1.5Gi", "--cpus", "1.5", "--network", "internet", "--allow", "10.0.0.5/32", "--allow", "192.168.1.7", "--allow-host", "10.203.0.1"},
			map[string]string{"TOKEN": "secret"},
			api.SandboxOptions{
				Image:  "base",
				Env:    map[string]string{"A": "1", "TOKEN": "secret"},
				Labels: map[string]string{"team": "ml", "tier": "gpu"},
				Limits: &api.Limits{MemoryBytes: 3 << 29, MilliCPU: 1500},
				Network: &api.NetworkOptions{Mode: api.NetworkInternet, AllowCIDRs: []string{"10.0.0.5/32", "192.168.1.7/32"},
					AllowHostCIDRs: []string{"10.203.0.1/32"}},
			},
		},
		{
			"allow alone leaves the mode to the daemon",
			[]string{"create", "x", "--allow", "10.1.0.0/16"},
			nil,
			api.SandboxOptions{Network: &api.NetworkOptions{AllowCIDRs: []string{"10.1.0.0/16"}}},
		},
		{"tiny cpus round to at least 1 milli", []string{"create", "x", "--cpus", "0.0001"}, nil, api.SandboxOptions{Limits: &api.Limits{MilliCPU: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeDaemon(t)
			var got api.SandboxOptions
			f.HandleFunc("PUT /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
				got = decodeBody[api.SandboxOptions](t, r)
				writeJSON(w, 201, api.Sandbox{ID: r.PathValue("id"), Status: api.StatusRunning, Created: true})
			})
			res := runCLI(t, f, cliRun{args: tt.args, env: tt.env})
			if res.code != 0 {
				t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
			if res.stdout != tt.args[1]+"\n" {
				t.Errorf("stdout = %q, want the ID", res.stdout)
			}
		})
	}
}

func TestCreateRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"create"},
		{"create", "a", "b"},
		{"create", "x", "--memory", "lots"},
		{"create", "x", "--memory", "0"},
		{"create", "x", "--cpus", "0"},
		{"create", "x", "--cpus", "-1"},
		{"create", "x", "--cpus", "NaN"},
		{"create", "x", "--pids", "0"},
		{"create", "x", "--network", "bridge"},
		{"create", "x", "--network", "none", "--allow", "10.0.0.1/32"},
		{"create", "x", "--allow", "not-a-cidr"},
		{"create", "x", "--network", "none", "--allow-host", "10.0.0.1/32"},
		{"create", "x", "--allow-host", "not-a-cidr"},
		{"create", "x", "--label", "novalue"},
		{"create", "x", "--env", "UNSET_HERE"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			f := newFakeDaemon(t)
			res := runCLI(t, f, cliRun{args: args})
			if res.code != exitFailure || !strings.HasPrefix(res.stderr, "sandbox: ") {
				t.Errorf("exit %d stderr %q, want %d and a message", res.code, res.stderr, exitFailure)
			}
			if reqs := f.requestLog(); len(reqs) != 0 {
				t.Errorf("requests sent: %v", reqs)
			}
		})
	}
}

func TestCreateExisting(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("PUT /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Sandbox{ID: r.PathValue("id"), Status: api.StatusRunning, Image: "host"})
	})
	res := runCLI(t, f, cliRun{args: []string{"create", "demo", "--image", "base"}})
	if res.code != 0 || res.stdout != "demo\n" || !strings.Contains(res.stderr, "exists already") {
		t.Errorf("create of an existing sandbox with options: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"create", "demo"}})
	if res.code != 0 || res.stderr != "" {
		t.Errorf("create of an existing sandbox without options: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"create", "demo", "--json"}})
	if res.code != 0 || !strings.Contains(res.stdout, `"id": "demo"`) {
		t.Errorf("create --json: %+v", res)
	}
}

func testSandboxes() []api.Sandbox {
	return []api.Sandbox{
		{
			ID: "demo", Status: api.StatusRunning, Image: "host", Runtime: "crun",
			Labels:     map[string]string{"team": "ml", "env": "dev"},
			Limits:     api.Limits{MemoryBytes: 1 << 30, MilliCPU: 1500, Pids: 1024},
			Network:    api.NetworkInfo{Mode: api.NetworkInternet, Address: "10.203.0.2", Gateway: "10.203.0.1", AllowCIDRs: []string{"10.0.0.5/32"}},
			CreatedAt:  testNow.Add(-3 * 24 * time.Hour),
			LastUsedAt: testNow.Add(-90 * time.Second),
		},
		{
			ID: "offline-build-42", Status: api.StatusStopped, Image: "base", Runtime: "runc",
			Limits:     api.Limits{MemoryBytes: 256 << 20, MilliCPU: 1000, Pids: 128},
			Network:    api.NetworkInfo{Mode: api.NetworkNone},
			CreatedAt:  testNow.Add(-5 * time.Hour),
			LastUsedAt: testNow.Add(-1 * time.Second),
		},
		{
			ID: "broken", Status: api.StatusFailed, StatusReason: "gvisor: cannot allocate memory", Image: "host", Runtime: "gvisor",
			CreatedAt: testNow.Add(-90 * 24 * time.Hour),
		},
	}
}

func listDaemon(t *testing.T) *fakeDaemon {
	f := newFakeDaemon(t)
	f.HandleFunc("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.SandboxList{Sandboxes: testSandboxes()})
	})
	f.HandleFunc("GET /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		for _, sb := range testSandboxes() {
			if sb.ID == r.PathValue("id") {
				writeJSON(w, 200, sb)
				return
			}
		}
		writeJSON(w, 404, api.Error{Code: api.CodeSandboxNotFound, Message: "no sandbox " + r.PathValue("id")})
	})
	return f
}

func TestList(t *testing.T) {
	f := listDaemon(t)
	res := runCLI(t, f, cliRun{args: []string{"ls"}})
	if res.code != 0 {
		t.Fatalf("ls: %+v", res)
	}
	golden(t, "ls.golden", res.stdout)

	res = runCLI(t, f, cliRun{args: []string{"ls", "--json"}})
	if res.code != 0 || !strings.HasPrefix(res.stdout, "{\n  \"sandboxes\": [") {
		t.Errorf("ls --json: %+v", res)
	}
}

func TestListEmptyJSON(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"sandboxes": nil})
	})
	res := runCLI(t, f, cliRun{args: []string{"ls", "--json"}})
	if res.stdout != "{\n  \"sandboxes\": []\n}\n" {
		t.Errorf("ls --json with no sandboxes = %q", res.stdout)
	}
}

func TestInfo(t *testing.T) {
	f := listDaemon(t)
	for _, id := range []string{"demo", "broken"} {
		res := runCLI(t, f, cliRun{args: []string{"info", id}})
		if res.code != 0 {
			t.Fatalf("info %s: %+v", id, res)
		}
		golden(t, "info-"+id+".golden", res.stdout)
	}
	res := runCLI(t, f, cliRun{args: []string{"info", "demo", "--json"}})
	if res.code != 0 || !strings.Contains(res.stdout, `"milliCpu": 1500`) {
		t.Errorf("info --json: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"info", "nope"}})
	if res.code != exitFailure || res.stderr != "sandbox: SANDBOX_NOT_FOUND: no sandbox nope\n" {
		t.Errorf("info of an unknown sandbox: %+v", res)
	}
}

func TestRemove(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("DELETE /v1/sandboxes/{id}", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.PathValue("id"), "gone") {
			writeJSON(w, 404, api.Error{Code: api.CodeSandboxNotFound, Message: "no sandbox " + r.PathValue("id")})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	tests := []struct {
		name string
		args []string
		want cliResult
	}{
		{"one", []string{"rm", "a"}, cliResult{"a\n", "", 0}},
		{"several", []string{"rm", "a", "b"}, cliResult{"a\nb\n", "", 0}},
		{"one unknown", []string{"rm", "gone"}, cliResult{"", "sandbox: SANDBOX_NOT_FOUND: no sandbox gone\n", 125}},
		{"some unknown", []string{"rm", "a", "gone1", "b", "gone2"}, cliResult{"a\nb\n",
			"sandbox: gone1: SANDBOX_NOT_FOUND: no sandbox gone1\nsandbox: gone2: SANDBOX_NOT_FOUND: no sandbox gone2\n", 125}},
		{"force", []string{"rm", "-f", "a", "gone"}, cliResult{"a\n", "", 0}},
		{"invalid ID", []string{"rm", "a", "Bad"}, cliResult{"a\n", "sandbox: Bad: INVALID_SANDBOX_ID: sandbox ID \"Bad\" has the character 'B' at byte 0; only a-z, 0-9 and '-' are allowed\n", 125}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := runCLI(t, f, cliRun{args: tt.args}); got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Health{Status: "ok", Version: "v9.9.9", Runtime: "crun"})
	})
	res := runCLI(t, f, cliRun{args: []string{"version"}})
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "sandbox ") ||
		lines[1] != "sandboxd v9.9.9 (runtime crun) at "+f.srv.URL {
		t.Errorf("version: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"version", "--client"}})
	if res.code != 0 || strings.Count(res.stdout, "\n") != 1 || len(f.requestLog()) != 1 {
		t.Errorf("version --client: %+v (requests %v)", res, f.requestLog())
	}
	// An unreachable daemon is reported, but the CLI's version still is.
	res = runCLI(t, nil, cliRun{args: []string{"version", "--url", "http://127.0.0.1:1"}})
	if res.code != 0 || !strings.HasPrefix(res.stdout, "sandbox ") || !strings.Contains(res.stderr, "unavailable") {
		t.Errorf("version without a daemon: %+v", res)
	}
}

// TestImageListNodes: through a cluster's gateway, image ls names each
// image's nodes.
func TestImageListNodes(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("GET /v1/images", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.ImageList{Images: []api.Image{
			{Names: []string{"app"}, Digest: "sha256:0123456789abcdef", Size: 1 << 20, Source: "docker-archive", Nodes: []string{"node-0", "node-1"}},
		}})
	})
	res := runCLI(t, f, cliRun{args: []string{"image", "ls"}})
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(lines) != 2 || !strings.HasSuffix(lines[0], "NODES") || !strings.HasSuffix(lines[1], "node-0,node-1") {
		t.Errorf("image ls through a gateway: %+v", res)
	}
}
