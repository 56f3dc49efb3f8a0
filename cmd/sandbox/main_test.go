package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/sse"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const testToken = "cli-test-token"

// testNow is the clock of every CLI test.
var testNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// fakeDaemon stands in for sandboxd: a ServeMux behind bearer-token auth
// that records the requests it gets.
type fakeDaemon struct {
	*http.ServeMux
	srv *httptest.Server

	mu       sync.Mutex
	requests []string // "METHOD /path"
}

func newFakeDaemon(t *testing.T) *fakeDaemon {
	t.Helper()
	f := &fakeDaemon{ServeMux: http.NewServeMux()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeJSON(w, 401, api.Error{Code: api.CodeUnauthorized, Message: "missing or wrong token"})
			return
		}
		f.ServeMux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeDaemon) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func decodeBody[T any](t *testing.T, r *http.Request) T {
	t.Helper()
	var v T
	if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
		t.Errorf("decoding %s %s: %v", r.Method, r.URL.Path, err)
	}
	return v
}

// streamEvents answers an exec stream with events, then ends it.
func streamEvents(evs ...api.ExecEvent) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		sw := sse.NewWriter(w)
		_ = sw.Keepalive()
		for _, ev := range evs {
			_ = sw.Send(ev.Type, ev)
		}
	}
}

func intp(i int) *int { return &i }

// cliRun is one run of the CLI.
type cliRun struct {
	args  []string
	env   map[string]string // the process environment; SANDBOX_URL and SANDBOX_TOKEN default to the fake's
	stdin string
	ctx   context.Context
}

type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs the CLI against f as main does and returns what it printed
// and its exit code. The token file lookup is pointed at an empty
// directory unless env says otherwise, so the host's real token is never
// read.
func runCLI(t *testing.T, f *fakeDaemon, r cliRun) cliResult {
	t.Helper()
	vars := map[string]string{envStateDir: t.TempDir()}
	if f != nil {
		vars["SANDBOX_URL"] = f.srv.URL
		vars["SANDBOX_TOKEN"] = testToken
	}
	maps.Copy(vars, r.env)
	var stdout, stderr bytes.Buffer
	e := &env{
		stdin:  strings.NewReader(r.stdin),
		stdout: &stdout,
		stderr: &stderr,
		getenv: func(k string) string { return vars[k] },
		now:    func() time.Time { return testNow },
	}
	ctx := r.ctx
	if ctx == nil {
		ctx = t.Context()
	}
	code := exitCode(e.stderr, run(ctx, e, r.args))
	return cliResult{stdout.String(), stderr.String(), code}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s:\n--- got ---\n%s--- want ---\n%s", path, got, want)
	}
}
