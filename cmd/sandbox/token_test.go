package main

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/sandboxd/sandboxd/api"
)

func writeTokenFile(t *testing.T, token string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolveToken(t *testing.T) {
	stateDir := writeTokenFile(t, "from-file")
	tests := []struct {
		name    string
		flag    *string
		env     map[string]string
		baseURL string
		want    string
	}{
		{"flag wins", ptr("from-flag"), map[string]string{"SANDBOX_TOKEN": "from-env", envStateDir: stateDir}, "http://127.0.0.1:7070", "from-flag"},
		{"explicit empty flag means none", ptr(""), map[string]string{"SANDBOX_TOKEN": "from-env"}, "http://127.0.0.1:7070", ""},
		{"env next", nil, map[string]string{"SANDBOX_TOKEN": "from-env", envStateDir: stateDir}, "http://127.0.0.1:7070", "from-env"},
		{"token file last", nil, map[string]string{envStateDir: stateDir}, "http://127.0.0.1:7070", "from-file"},
		{"token file for localhost", nil, map[string]string{envStateDir: stateDir}, "http://localhost:7070", "from-file"},
		{"token file for ::1", nil, map[string]string{envStateDir: stateDir}, "http://[::1]:7070", "from-file"},
		{"token file for 127.0.0.2", nil, map[string]string{envStateDir: stateDir}, "http://127.0.0.2:7070", "from-file"},
		{"never sent to a remote daemon", nil, map[string]string{envStateDir: stateDir}, "https://sandboxes.example.com", ""},
		{"never sent to a LAN address", nil, map[string]string{envStateDir: stateDir}, "http://10.0.0.5:7070", ""},
		{"not to a name ending in localhost", nil, map[string]string{envStateDir: stateDir}, "http://evil-localhost.com", ""},
		{"no token file", nil, map[string]string{envStateDir: t.TempDir()}, "http://127.0.0.1:7070", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tokenSources{getenv: func(k string) string { return tt.env[k] }, baseURL: tt.baseURL}
			if tt.flag != nil {
				s.flag, s.flagSet = *tt.flag, true
			}
			if got := resolveToken(s); got != tt.want {
				t.Errorf("resolveToken = %q, want %q", got, tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestTokenFileFallback(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.SandboxList{})
	})
	// httptest listens on 127.0.0.1, so the local token file applies.
	env := map[string]string{"SANDBOX_TOKEN": "", envStateDir: writeTokenFile(t, testToken)}
	if res := runCLI(t, f, cliRun{args: []string{"ls"}, env: env}); res.code != 0 {
		t.Fatalf("ls with the token file: %+v", res)
	}
	// Without any token the daemon refuses, and the CLI says what to do.
	env[envStateDir] = t.TempDir()
	res := runCLI(t, f, cliRun{args: []string{"ls"}, env: env})
	if res.code != exitFailure || res.stderr != "sandbox: UNAUTHORIZED: missing or wrong token\n"+
		"hint: pass --token or set SANDBOX_TOKEN; the daemon's token is in its state directory (/var/lib/sandboxd/token)\n" {
		t.Errorf("ls without a token: %+v", res)
	}
}

func TestURLSources(t *testing.T) {
	f := newFakeDaemon(t)
	f.HandleFunc("GET /v1/sandboxes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.SandboxList{})
	})
	// The flag beats the environment.
	res := runCLI(t, f, cliRun{args: []string{"ls", "--url", f.srv.URL}, env: map[string]string{"SANDBOX_URL": "http://127.0.0.1:1"}})
	if res.code != 0 {
		t.Errorf("--url over SANDBOX_URL: %+v", res)
	}
	res = runCLI(t, f, cliRun{args: []string{"--token", testToken, "ls"}, env: map[string]string{"SANDBOX_TOKEN": "wrong"}})
	if res.code != 0 {
		t.Errorf("--token over SANDBOX_TOKEN: %+v", res)
	}
}
