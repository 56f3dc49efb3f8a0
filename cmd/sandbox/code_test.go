package main

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

func TestRunCodeStreamsAndSavesImages(t *testing.T) {
	png := []byte("\x89PNG\r\n\x1a\nfake")
	f := newFakeDaemon(t)
	var got api.RunCodeRequest
	f.HandleFunc("POST /v1/sandboxes/{id}/code/run/stream", func(w http.ResponseWriter, r *http.Request) {
		got = decodeBody[api.RunCodeRequest](t, r)
		sw := sse.NewWriter(w)
		for _, ev := range []api.CodeEvent{
			{Type: "start", ContextID: "default-python", Language: "python"},
			{Type: "stdout", Data: "Sum: 15\n"},
			{Type: "result", Result: &api.CodeResult{Text: "<Figure>", PNG: base64.StdEncoding.EncodeToString(png)}},
			{Type: "result", Result: &api.CodeResult{Text: "15", IsMainResult: true}},
			{Type: "complete", ExecutionCount: 1},
		} {
			sw.Send(ev.Type, ev)
		}
	})
	dir := filepath.Join(t.TempDir(), "out")
	res := runCLI(t, f, cliRun{args: []string{"run-code", "--lang", "py", "--timeout", "2s", "--out", dir, "demo"}, stdin: "print(15)\n15"})
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	img := filepath.Join(dir, "result-1.png")
	if want := "Sum: 15\n[" + img + "]\n15\n"; res.stdout != want {
		t.Errorf("stdout %q, want %q", res.stdout, want)
	}
	if data, err := os.ReadFile(img); err != nil || string(data) != string(png) {
		t.Errorf("image file: %q %v", data, err)
	}
	if got.Code != "print(15)\n15" || got.Language != "python" || got.Timeout != 2000 {
		t.Errorf("request %+v", got)
	}
}

// TestRunCodeJSONKeepsHTML: --json prints HTML as it is (a pandas table, a
// figure's repr), not Go's \u003c escapes, so a person or grep finds it.
func TestRunCodeJSONKeepsHTML(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("POST /v1/sandboxes/{id}/code/run/stream", func(w http.ResponseWriter, r *http.Request) {
		sw := sse.NewWriter(w)
		sw.Send("start", api.CodeEvent{Type: "start"})
		sw.Send("result", api.CodeEvent{Type: "result", Result: &api.CodeResult{Text: "<Figure>", HTML: "<table><tr><td>a & b</td></tr></table>", IsMainResult: true}})
		sw.Send("complete", api.CodeEvent{Type: "complete", ExecutionCount: 1})
	})
	res := runCLI(t, f, cliRun{args: []string{"run-code", "--json", "demo"}, stdin: "df"})
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if strings.Contains(res.stdout, `\u003c`) || strings.Contains(res.stdout, `\u0026`) ||
		!strings.Contains(res.stdout, `"<table><tr><td>a & b</td></tr></table>"`) || !strings.Contains(res.stdout, `"<Figure>"`) {
		t.Errorf("--json escaped HTML:\n%s", res.stdout)
	}
}

func TestRunCodeErrorExitsOne(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("POST /v1/sandboxes/{id}/code/run/stream", func(w http.ResponseWriter, r *http.Request) {
		sw := sse.NewWriter(w)
		sw.Send("start", api.CodeEvent{Type: "start"})
		sw.Send("execution_error", api.CodeEvent{Type: "execution_error", Error: &api.ExecutionError{Name: "ZeroDivisionError", Value: "division by zero", Traceback: []string{"Cell In [1], line 1"}}})
		sw.Send("complete", api.CodeEvent{Type: "complete", ExecutionCount: 1})
	})
	code := filepath.Join(t.TempDir(), "cell.py")
	os.WriteFile(code, []byte("1/0"), 0o644)
	res := runCLI(t, f, cliRun{args: []string{"run-code", "demo", code}})
	if res.code != 1 || res.stderr != "Cell In [1], line 1\nZeroDivisionError: division by zero\n" {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	res = runCLI(t, f, cliRun{args: []string{"run-code", "--json", "demo", code}})
	if res.code != 1 || !strings.Contains(res.stdout, `"name": "ZeroDivisionError"`) {
		t.Errorf("--json: exit %d, stdout %s", res.code, res.stdout)
	}
	if res := runCLI(t, f, cliRun{args: []string{"run-code", "--lang", "cobol", "demo", code}}); res.code != exitFailure {
		t.Errorf("bad --lang: exit %d", res.code)
	}
}

func TestContextsTable(t *testing.T) {
	f := newFakeDaemon(t)
	now := time.Now().UTC()
	f.HandleFunc("GET /v1/sandboxes/{id}/code/contexts", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.CodeContextList{Contexts: []api.CodeContext{
			{ID: "default-python", Language: "python", Cwd: "/workspace", Status: "ready", ExecutionCount: 3, CreatedAt: now, LastUsed: now},
			{ID: "abc", Language: "typescript", Cwd: "/tmp", Status: "terminated", CreatedAt: now, LastUsed: now},
		}})
	})
	res := runCLI(t, f, cliRun{args: []string{"contexts", "demo"}})
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if res.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") ||
		!strings.Contains(lines[1], "default-python") || !strings.Contains(lines[2], "terminated") {
		t.Errorf("exit %d:\n%s", res.code, res.stdout)
	}
}
