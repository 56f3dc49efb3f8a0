// Package testgit serves real git repositories over smart HTTP (git
// http-backend through net/http/cgi) for tests of git checkout. It is for
// tests only.
package testgit

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Credentials of the private repository.
const (
	User     = "alice"
	Password = "s3cr3t-t0k3n-value"
)

// Server serves two bare repositories: public.git (branches main, with
// three commits, and develop, which adds DEVELOP) and private.git (the same,
// behind HTTP Basic auth with User and Password). Anything else is 404.
type Server struct {
	// URL is the server's base, e.g. http://10.0.0.1:34567.
	URL string
	// Delay slows every request to private.git, so a test can look at
	// the process list while a clone runs; a request whose client leaves
	// stops waiting.
	Delay time.Duration

	mu       sync.Mutex
	requests []string // request URIs
	auths    []string // Authorization headers seen
}

// Start creates the repositories and serves them on addr (host:port; port
// 0 picks one) until the test ends.
func Start(t testing.TB, addr string) *Server {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("needs git")
	}
	execPath, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend")
	root := t.TempDir()
	src := filepath.Join(root, "src")
	gitRun(t, root, "init", "-q", "-b", "main", src)
	for i, line := range []string{"one", "two", "three"} {
		os.WriteFile(filepath.Join(src, "README.md"), []byte(strings.Repeat(line+"\n", i+1)), 0o644)
		gitRun(t, src, "add", "README.md")
		gitRun(t, src, "commit", "-q", "-m", line)
	}
	gitRun(t, src, "checkout", "-q", "-b", "develop")
	os.WriteFile(filepath.Join(src, "DEVELOP"), []byte("dev\n"), 0o644)
	gitRun(t, src, "add", "DEVELOP")
	gitRun(t, src, "commit", "-q", "-m", "develop")
	gitRun(t, src, "checkout", "-q", "main")
	repos := filepath.Join(root, "repos")
	gitRun(t, root, "clone", "-q", "--bare", src, filepath.Join(repos, "public.git"))
	gitRun(t, root, "clone", "-q", "--bare", src, filepath.Join(repos, "private.git"))

	s := &Server{}
	h := &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + repos, "GIT_HTTP_EXPORT_ALL=1"},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.RequestURI)
		if a := r.Header.Get("Authorization"); a != "" {
			s.auths = append(s.auths, a)
		}
		delay := s.Delay
		s.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/private.git") {
			// A client that leaves (a clone killed by its timeout) or the
			// server's close ends the wait: a test may ask a delay far
			// longer than it runs.
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
			if u, p, ok := r.BasicAuth(); !ok || u != User || p != Password {
				w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
				http.Error(w, "auth required", http.StatusUnauthorized)
				return
			}
		}
		// The CGI handler hands the request body to git's stdin, which
		// os/exec copies from a goroutine of its own; net/http does not
		// support reading a body off the handler's goroutine
		// (golang/go#46866), and when git exits without reading it (a
		// repository that does not exist) that read raced the server's
		// read of the next request: "http: panic serving ...: invalid
		// concurrent Body.Read call". git gets the body from memory
		// instead; a test's bodies are small.
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			http.Error(w, "body unreadable or too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s.URL = "http://" + ln.Addr().String()
	return s
}

// maxBody bounds a request body the server takes.
const maxBody = 64 << 20

// SetDelay sets Delay.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	s.Delay = d
	s.mu.Unlock()
}

// Requests returns the request URIs served so far.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Auths returns the Authorization headers received so far.
func (s *Server) Auths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auths...)
}

// PrivateURL is the private repository's URL with the credentials in it.
func (s *Server) PrivateURL(user, password string) string {
	return strings.Replace(s.URL, "://", "://"+user+":"+password+"@", 1) + "/private.git"
}

func gitRun(t testing.TB, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}
