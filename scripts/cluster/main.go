// Command cluster starts and stops a development cluster on this machine
// (`make cluster-up`, `make cluster-down`; docs/cluster.md): etcd and
// kube-apiserver (internal/kubetest), three sandboxd nodes, each with its
// own state and run directories, port, interface prefix, subnet, nftables
// table, cgroup parent and user namespace base, and one gateway.
//
//	go run ./scripts/cluster up [--dir D] [--nodes 3]   prints SANDBOX_URL=... and SANDBOX_TOKEN=...
//	go run ./scripts/cluster down [--dir D]             stops it and removes what it made
//
// up starts a supervisor process (this program, detached) that owns every
// process of the cluster; down signals it, and it destroys the cluster's
// sandboxes, stops the daemons and removes their tables, cgroups, mounts
// and directories before it exits.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/internal/kubetest"
	"github.com/sandboxd/sandboxd/internal/leftovers"
)

const defaultDir = "/tmp/sandboxd-cluster"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cluster up|down [--dir D] [--nodes N] [--bin DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("cluster "+os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", defaultDir, "the cluster's directory")
	nodes := fs.Int("nodes", 3, "how many sandboxd nodes")
	bin := fs.String("bin", "bin", "directory with sandboxd and sandbox-agent (make build)")
	fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "up":
		err = up(*dir, *bin, *nodes)
	case "down":
		err = down(*dir)
	case "supervise":
		err = supervise(*dir, *bin, *nodes)
	default:
		err = fmt.Errorf("unknown command %q: want up or down", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// up starts the supervisor and prints the cluster's environment once it
// is ready.
func up(dir, bin string, nodes int) error {
	if _, err := os.Stat(filepath.Join(dir, "supervisor.pid")); err == nil {
		return fmt.Errorf("a cluster runs in %s already: make cluster-down first", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// The log is beside the directory, which a failed start removes.
	logf, err := os.Create(dir + ".log")
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(self, "supervise", "--dir", dir, "--bin", bin, "--nodes", strconv.Itoa(nodes))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	envFile := filepath.Join(dir, "env")
	deadline := time.After(5 * time.Minute)
	for {
		if b, err := os.ReadFile(envFile); err == nil {
			os.Stdout.Write(b)
			return nil
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(dir + ".log")
			return fmt.Errorf("the cluster did not start (%v):\n%s", err, tail(b, 4000))
		case <-deadline:
			return fmt.Errorf("the cluster was not ready within 5 minutes; see %s.log, then make cluster-down", dir)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// down signals the supervisor and waits for it to have cleaned up.
func down(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "supervisor.pid"))
	if errors.Is(err, os.ErrNotExist) {
		fmt.Println("no cluster runs in", dir)
		return nil
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("%s/supervisor.pid: %q is not a process ID", dir, b)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		// Gone without cleaning up (killed): nothing to wait for.
		return fmt.Errorf("the supervisor (%d) is not running: %w; its processes and state under %s may remain", pid, err, dir)
	}
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			if _, err := os.Stat(dir); err == nil {
				return fmt.Errorf("the supervisor ended but %s remains; see %s.log", dir, dir)
			}
			os.Remove(dir + ".log")
			fmt.Println("cluster stopped")
			return nil
		}
	}
	return fmt.Errorf("the supervisor (%d) did not finish within 3 minutes", pid)
}

// node is one sandboxd of the cluster.
type node struct {
	name, url, table, cgroup, state, run string
	cmd                                  *exec.Cmd
}

// supervise runs the cluster until SIGTERM, then removes it.
func supervise(dir, bin string, n int) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := os.WriteFile(filepath.Join(dir, "supervisor.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return err
	}
	var kc *kubetest.Cluster
	var nodes []*node
	var gw *exec.Cmd
	token := randomHex(16)
	defer func() {
		teardown(kc, nodes, gw, token)
		os.RemoveAll(dir)
	}()
	if err := os.MkdirAll(filepath.Join(dir, "kube"), 0o700); err != nil {
		return err
	}
	kc, err = kubetest.Run(ctx, kubetest.Options{Dir: filepath.Join(dir, "kube")})
	if err != nil {
		return err
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	gwAddr, err := freeAddr()
	if err != nil {
		return err
	}
	_, gwPort, _ := net.SplitHostPort(gwAddr)
	// Unique per supervisor: a second cluster, or test daemons, beside it.
	tag := os.Getpid() % 1000
	for i := range n {
		nd, err := startNode(dir, bin, kc.Kubeconfig, token, gwPort, tag, i)
		if nd != nil {
			nodes = append(nodes, nd)
		}
		if err != nil {
			return err
		}
	}
	gw = exec.Command(filepath.Join(bin, "sandboxd"), "gateway", "--kubeconfig", kc.Kubeconfig,
		"--token-file", tokenFile, "--listen", gwAddr)
	if gw.Stdout, err = os.Create(filepath.Join(dir, "gateway.log")); err != nil {
		return err
	}
	gw.Stderr = gw.Stdout
	if err := gw.Start(); err != nil {
		return err
	}
	url := "http://" + gwAddr
	if err := waitReady(ctx, url, token, n); err != nil {
		return err
	}
	env := fmt.Sprintf("SANDBOX_URL=%s\nSANDBOX_TOKEN=%s\n", url, token)
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o600); err != nil {
		return err
	}
	fmt.Println("cluster ready:", url)
	<-ctx.Done()
	return nil
}

func startNode(dir, bin, kubeconfig, token, gwPort string, tag, i int) (*node, error) {
	name := fmt.Sprintf("node-%d", i)
	nd := &node{name: name, table: fmt.Sprintf("sbdcl%d_%d", tag, i), cgroup: fmt.Sprintf("sbdcl%d_%d", tag, i),
		state: filepath.Join(dir, name, "state")}
	// Short: agent socket paths must fit in 107 bytes.
	run, err := os.MkdirTemp("/tmp", "sbc")
	if err != nil {
		return nil, err
	}
	nd.run = run
	if err := os.MkdirAll(nd.state, 0o700); err != nil {
		return nd, err
	}
	if err := os.WriteFile(filepath.Join(nd.state, "token"), []byte(token+"\n"), 0o600); err != nil {
		return nd, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nd, err
	}
	nd.url = "http://" + addr
	letters := "abcdefghijklmnopqrstuvwxyz"
	prefix := "k" + string(letters[tag%26]) + string(letters[i%26])
	nd.cmd = exec.Command(filepath.Join(bin, "sandboxd"),
		"--state-dir", nd.state, "--run-dir", run, "--listen", addr,
		"--agent", filepath.Join(bin, "sandbox-agent"),
		"--subnet", fmt.Sprintf("10.%d.%d.0/22", 240+tag%10, i*4),
		"--nft-table", nd.table, "--iface-prefix", prefix, "--cgroup-parent", nd.cgroup,
		// Ranges apart from a host daemon's (1,000,000 up) and each other's.
		"--userns-base", strconv.FormatInt(1_000_000_000+int64(i)*500_000_000, 10),
		"--cluster-kubeconfig", kubeconfig, "--node-name", name,
		"--preview-port", gwPort, "--image-cache-dir", "")
	logf, err := os.Create(filepath.Join(dir, name, "sandboxd.log"))
	if err != nil {
		return nd, err
	}
	nd.cmd.Stdout, nd.cmd.Stderr = logf, logf
	return nd, nd.cmd.Start()
}

// waitReady waits until the gateway lists n ready nodes.
func waitReady(ctx context.Context, url, token string, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		var list struct {
			Nodes []struct{ State string } `json:"nodes"`
		}
		if err := getJSON(ctx, url+"/v1/nodes", token, &list); err == nil {
			ready := 0
			for _, nd := range list.Nodes {
				if nd.State == "ready" {
					ready++
				}
			}
			if ready == n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the gateway did not list %d ready nodes: %w", n, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// teardown destroys every sandbox, stops the gateway and nodes and
// removes what they leave: lxcfs, mounts, nftables tables, cgroups.
func teardown(kc *kubetest.Cluster, nodes []*node, gw *exec.Cmd, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if gw != nil && gw.Process != nil {
		gw.Process.Signal(syscall.SIGTERM)
		gw.Wait()
	}
	for _, nd := range nodes {
		destroyAll(ctx, nd, token)
	}
	for _, nd := range nodes {
		if nd.cmd != nil && nd.cmd.Process != nil {
			nd.cmd.Process.Signal(syscall.SIGTERM)
			waitOrKill(nd.cmd, 30*time.Second)
		}
		leftovers.Remove(leftovers.Daemon{StateDir: nd.state, RunDir: nd.run, Table: nd.table, CgroupParent: nd.cgroup})
	}
	if kc != nil {
		kc.Stop()
	}
}

// destroyAll destroys every sandbox of node nd, each as its tenant.
func destroyAll(ctx context.Context, nd *node, token string) {
	var list struct {
		Sandboxes []struct{ ID, Tenant string } `json:"sandboxes"`
	}
	if err := getJSON(ctx, nd.url+"/v1/sandboxes", token, &list); err != nil {
		fmt.Fprintf(os.Stderr, "listing %s's sandboxes: %v\n", nd.name, err)
		return
	}
	for _, sb := range list.Sandboxes {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, nd.url+"/v1/sandboxes/"+sb.ID, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if sb.Tenant != "" && sb.Tenant != "default" {
			req.Header.Set("Sandbox-Tenant", sb.Tenant)
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
}

func waitOrKill(cmd *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
	}
}

func getJSON(ctx context.Context, url, token string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return bytes.TrimSpace(b)
}
