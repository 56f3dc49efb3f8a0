package testdaemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
)

var (
	testsrvOnce sync.Once
	testsrvPath string
	testsrvErr  error
)

// BuildTestServer builds testsrv (a static web service for tests, see
// testsrv/main.go) once per test process and returns its path.
func BuildTestServer(t testing.TB) string {
	t.Helper()
	testsrvOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sandboxd-testsrv")
		if err != nil {
			testsrvErr = err
			return
		}
		testsrvPath = filepath.Join(dir, "testsrv")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", testsrvPath, "./internal/testdaemon/testsrv")
		cmd.Dir = moduleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			testsrvErr = fmt.Errorf("building testsrv: %w\n%s", err, out)
		}
	})
	if testsrvErr != nil {
		t.Fatal(testsrvErr)
	}
	return testsrvPath
}

// CopyIn writes the local file to path in the sandbox (mode 0755), in
// pieces that fit the exec API's stdin limit.
func CopyIn(t testing.TB, sb *client.Sandbox, local, path string) {
	t.Helper()
	data, err := os.ReadFile(local)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const piece = 6 << 20
	for off := 0; off == 0 || off < len(data); off += piece {
		redirect := ">>"
		if off == 0 {
			redirect = ">"
		}
		chunk := data[off:min(off+piece, len(data))]
		res, err := sb.Exec(ctx, fmt.Sprintf("cat %s %q", redirect, path+".part"), client.WithStdin(chunk))
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("copying %s into the sandbox: %v %+v", local, err, res)
		}
	}
	// A rename, so that a copy over a running program works.
	if res, err := sb.Exec(ctx, fmt.Sprintf("chmod 755 %q && mv -f %q %q", path+".part", path+".part", path)); err != nil || res.ExitCode != 0 {
		t.Fatalf("chmod %s: %v %+v", path, err, res)
	}
}

// StartTestServer copies testsrv into the sandbox and starts it in the
// background on addr (e.g. "0.0.0.0:8080"), waiting until it answers
// inside the sandbox.
func StartTestServer(t testing.TB, sb *client.Sandbox, addr string) {
	t.Helper()
	CopyIn(t, sb, BuildTestServer(t), "/tmp/testsrv")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The wait runs in a subshell: an exit in the session's shell itself
	// would end the session.
	cmd := fmt.Sprintf(`nohup /tmp/testsrv -addr %s >/tmp/testsrv-%s.log 2>&1 &
(for i in $(seq 200); do
  python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)' %s 2>/dev/null && exit 0
  sleep 0.05
done; exit 1)`, addr, strings.ReplaceAll(addr, ":", "_"), hostPort(addr))
	res, err := sb.Exec(ctx, cmd)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("starting testsrv on %s: %v %+v", addr, err, res)
	}
}

func hostPort(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			host := addr[:i]
			if host == "0.0.0.0" {
				host = "127.0.0.1"
			}
			return host + " " + addr[i+1:]
		}
	}
	return addr
}
