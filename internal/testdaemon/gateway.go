package testdaemon

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/client"
)

// Gateway stands for a cluster's gateway at url as a Daemon: its URL,
// Token and Client name the gateway, so tests written against a daemon's
// API run against the cluster. It has no process, state or log of its
// own: Start, Stop, Kill, Restart, AgentPID and Keys are not for it.
func Gateway(url, token string) (*Daemon, error) {
	c, err := client.New(url, client.WithToken(token))
	if err != nil {
		return nil, err
	}
	return &Daemon{URL: url, Token: token, Client: c, log: &lockedBuffer{}}, nil
}

// StartGateway starts `sandboxd gateway` on addr (host:port) in front of
// the cluster whose kubeconfig it is given, with the token in tokenFile,
// and stops it when t ends (its log is shown when t failed). It returns
// the gateway's process, for tests that kill it.
func StartGateway(t testing.TB, kubeconfig, tokenFile, addr string) *exec.Cmd {
	t.Helper()
	log := &lockedBuffer{}
	cmd := exec.Command(filepath.Join(BinDir(t), "sandboxd"), "gateway", "--kubeconfig", kubeconfig,
		"--token-file", tokenFile, "--listen", addr, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("gateway %s log:\n%s", addr, tail(log.String(), 12000))
		}
	})
	// Its own "serving" line, not only a port that answers: addr was free
	// when the caller picked it, but another process may have taken it
	// since (the gateway then fails with EADDRINUSE), and a dial would
	// reach that process.
	serving := `msg="sandboxd gateway serving" listen=` + addr + " "
	deadline := time.Now().Add(30 * time.Second)
	for {
		if strings.Contains(log.String(), serving) {
			if conn, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
				conn.Close()
				return cmd
			}
		}
		if exitedYet(cmd) {
			t.Fatalf("the gateway exited before it listened on %s:\n%s", addr, log.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not start listening on %s within 30s:\n%s", addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exitedYet reports whether cmd's process has exited, without waiting for
// it (its caller does): a zombie still takes signals, so Signal(0) cannot
// tell.
func exitedYet(cmd *exec.Cmd) bool {
	var info unix.Siginfo
	err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
	// With WNOHANG and no exit to report, the kernel leaves si_signo 0;
	// an exit reports SIGCHLD.
	return err != nil || info.Signo != 0
}

// FreeAddr returns a loopback address with a port free at the time of the
// call.
func FreeAddr(t testing.TB) string { return freeAddr(t) }
