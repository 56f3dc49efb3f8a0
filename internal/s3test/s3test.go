// Package s3test starts a real S3-compatible server for tests: versitygw
// (built by scripts/deps.sh test) on a loopback port of its own, with a
// POSIX backend in a temporary directory. It must never be imported by
// non-test code.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/osthread"
	"github.com/sandboxd/sandboxd/internal/s3"
)

// Server is a running versitygw.
type Server struct {
	// Endpoint is the server's URL, http://127.0.0.1:PORT.
	Endpoint string
	// Creds are the root user's credentials (random per server).
	Creds s3.Credentials
	// Dir is the POSIX backend: one directory per bucket.
	Dir string

	cmd  *exec.Cmd
	done chan error
}

// Binary finds versitygw: on PATH, else in scripts/deps.sh's tool cache.
func Binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	var dirs []string
	if d := os.Getenv("SANDBOXD_TOOLS_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, "/var/cache/sandboxd/tools")
	if home, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "sandboxd", "tools"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "bin", "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("versitygw not found: run scripts/deps.sh test (it builds it from its Go module)")
}

// Start starts a server for t, stopped when t ends. It skips t when
// versitygw is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Skip(err)
	}
	s, err := start(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// start runs versitygw on a free loopback port, retrying when another
// process took the port between choosing and binding it.
func start(bin, dir string) (*Server, error) {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		s, err := startOnce(bin, dir)
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, last
}

func startOnce(bin, dir string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	creds := s3.Credentials{AccessKeyID: "test" + randomHex(8), SecretAccessKey: randomHex(20)}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", addr, "--quiet", "posix", dir)
	// Credentials in the environment, not the command line (ps shows it).
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+creds.AccessKeyID, "ROOT_SECRET_ACCESS_KEY="+creds.SecretAccessKey)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(dir, "..", fmt.Sprintf("versitygw-%d.log", port)))
	if err == nil {
		cmd.Stdout, cmd.Stderr = logf, logf
		defer logf.Close()
	}
	// The parent-death signal needs a thread that lives as long as the
	// test process (osthread.StartLasting says why).
	if err := osthread.StartLasting(cmd); err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	s := &Server{Endpoint: "http://" + addr, Creds: creds, Dir: dir, cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady polls until the server answers HTTP on its port.
func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	hc := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return fmt.Errorf("versitygw exited at start: %v", err)
		default:
		}
		resp, err := hc.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("versitygw did not answer on %s within %s", s.Endpoint, limit)
}

// Stop kills the server and waits for it. Safe to call twice.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
	}
	err := <-s.done
	s.done <- err
}

// Client is an S3 client of the server with its root credentials.
func (s *Server) Client() *s3.Client {
	return &s3.Client{Endpoint: s.Endpoint, Creds: s.Creds}
}

// Bucket creates a bucket named name.
func (s *Server) Bucket(t testing.TB, name string) {
	t.Helper()
	if err := s.Client().CreateBucket(context.Background(), name); err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
