package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/api"
)

func TestStartPrintsTheIDAndWaitExitsWithTheCode(t *testing.T) {
	f := newFakeDaemon(t)
	var got api.StartProcessRequest
	f.HandleFunc("POST /v1/sandboxes/demo/processes", func(w http.ResponseWriter, r *http.Request) {
		got = decodeBody[api.StartProcessRequest](t, r)
		writeJSON(w, 201, api.Process{ID: got.ProcessID, PID: 7, Status: api.ProcessRunning})
	})
	f.HandleFunc("POST /v1/sandboxes/demo/processes/web/wait/exit", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Process{ID: "web", Status: api.ProcessFailed, ExitCode: intp(3)})
	})
	f.HandleFunc("POST /v1/sandboxes/demo/processes/web/wait/port", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 408, api.Error{Code: api.CodeProcessReadyTimeout, Message: "not ready"})
	})
	res := runCLI(t, f, cliRun{args: []string{"start", "demo", "--name", "web", "--session", "s", "-e", "A=1", "--", "python3", "-m", "http.server"}})
	if res.code != 0 || res.stdout != "web\n" {
		t.Fatalf("start: %+v", res)
	}
	if got.Command != "python3 -m http.server" || got.SessionID != "s" || got.Env["A"] != "1" {
		t.Errorf("request %+v", got)
	}
	if res := runCLI(t, f, cliRun{args: []string{"wait", "demo", "web"}}); res.code != 3 {
		t.Errorf("wait --exit: %+v", res)
	}
	if res := runCLI(t, f, cliRun{args: []string{"wait", "demo", "web", "--port", "80"}}); res.code != 124 || !strings.Contains(res.stderr, "PROCESS_READY_TIMEOUT") {
		t.Errorf("wait --port timeout: %+v", res)
	}
	if res := runCLI(t, f, cliRun{args: []string{"wait", "demo", "web", "--port", "80", "--exit"}}); res.code != 125 {
		t.Errorf("two modes: %+v", res)
	}
}
