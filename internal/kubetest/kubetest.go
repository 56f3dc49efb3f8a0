// Package kubetest runs a real Kubernetes API on loopback, for tests and
// for `make cluster-up`: etcd and kube-apiserver (built by scripts/deps.sh
// test) on free ports of their own, with their own data directory, a
// self-signed serving certificate and a static token, the Sandbox CRD
// installed and a kubeconfig written. Stop ends both and removes what they
// made. It must never be imported by the daemon.
package kubetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/kube"
	"github.com/sandboxd/sandboxd/internal/osthread"
)

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// Server is the API server's URL, https://127.0.0.1:PORT.
	Server string
	// Token is the static admin token (group system:masters).
	Token string
	// CAData is the PEM certificate the serving certificate chains to.
	CAData []byte
	// Kubeconfig is the path of a kubeconfig file for the admin, in Dir.
	Kubeconfig string
	// Namespace holds sandboxd's objects (kube.DefaultNamespace, created).
	Namespace string
	// Dir holds the data, certificates, logs and kubeconfig.
	Dir string

	etcd, apiserver *process
	removeDir       bool
}

// Options configure Run.
type Options struct {
	// Dir is where the cluster keeps its files; empty: a new temporary
	// directory, removed by Stop.
	Dir string
	// Ready bounds the time to a ready API with the CRD installed;
	// 0: two minutes (kube-apiserver starts in seconds on a quiet machine,
	// far slower on a loaded one).
	Ready time.Duration
}

// binaryNames are the two programs, as scripts/deps.sh names them.
var binaryNames = []string{"etcd", "kube-apiserver"}

// Binaries finds etcd and kube-apiserver: on PATH, else in scripts/deps.sh's
// tool cache.
func Binaries() (etcd, apiserver string, err error) {
	var found []string
	for _, name := range binaryNames {
		p, err := findTool(name)
		if err != nil {
			return "", "", err
		}
		found = append(found, p)
	}
	return found[0], found[1], nil
}

func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
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
		p := filepath.Join(d, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: run scripts/deps.sh test (it builds etcd and kube-apiserver from their Go modules)", name)
}

// Start starts a cluster for t, stopped when t ends. It skips t when the
// binaries are missing.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if _, _, err := Binaries(); err != nil {
		t.Skip(err)
	}
	c, err := Run(context.Background(), Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// Run starts etcd and kube-apiserver and returns once the API is ready,
// the namespace exists and the Sandbox CRD is served. It tries again (up
// to three times) when one of them exits at start: another process may
// have taken a port between choosing it and binding it.
func Run(ctx context.Context, o Options) (*Cluster, error) {
	etcdBin, apiBin, err := Binaries()
	if err != nil {
		return nil, err
	}
	if o.Ready == 0 {
		o.Ready = 2 * time.Minute
	}
	removeDir := false
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "kubetest-"); err != nil {
			return nil, err
		}
		removeDir = true
	}
	for attempt := 1; ; attempt++ {
		c := &Cluster{Dir: o.Dir, Namespace: kube.DefaultNamespace, removeDir: removeDir}
		err := c.run(ctx, o, etcdBin, apiBin)
		if err == nil {
			return c, nil
		}
		c.removeDir = false
		c.Stop()
		if !errors.Is(err, errExited) || attempt == 3 {
			if removeDir {
				os.RemoveAll(o.Dir)
			}
			return nil, err
		}
		for _, name := range []string{"etcd", "pki"} {
			os.RemoveAll(filepath.Join(o.Dir, name))
		}
	}
}

func (c *Cluster) run(ctx context.Context, o Options, etcdBin, apiBin string) error {
	ctx, cancel := context.WithTimeout(ctx, o.Ready)
	defer cancel()
	etcdURL, err := c.startEtcd(ctx, etcdBin)
	if err != nil {
		return err
	}
	if err := c.startAPIServer(ctx, apiBin, etcdURL); err != nil {
		return err
	}
	if err := c.writeKubeconfig(); err != nil {
		return err
	}
	return c.install(ctx)
}

// startEtcd runs a one-member etcd on two free loopback ports (clients,
// peers) and returns its client URL. It does not fsync: the data is a
// test's or a development cluster's.
func (c *Cluster) startEtcd(ctx context.Context, bin string) (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.etcd, err = startProcess(bin, filepath.Join(c.Dir, "etcd.log"),
		"--name=kubetest", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=kubetest="+peer, "--initial-cluster-state=new",
		"--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes="+strconv.Itoa(1<<30),
	)
	if err != nil {
		return "", err
	}
	if err := c.etcd.waitHTTP(ctx, client+"/health", nil); err != nil {
		log := filepath.Join(c.Dir, "etcd.log")
		return "", fmt.Errorf("etcd did not become healthy: %w; the end of %s:\n%s", err, log, logTail(log, 2048))
	}
	return client, nil
}

// startAPIServer writes the certificates, the service account key and the
// token file, and runs kube-apiserver against etcdURL.
func (c *Cluster) startAPIServer(ctx context.Context, bin, etcdURL string) error {
	pki := filepath.Join(c.Dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	ca, err := writePKI(pki)
	if err != nil {
		return err
	}
	c.CAData = ca
	c.Token = randomHex(24)
	tokens := filepath.Join(pki, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(c.Token+`,kubetest-admin,kubetest-admin,"system:masters"`+"\n"), 0o600); err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	c.Server = "https://127.0.0.1:" + strconv.Itoa(ports[0])
	// --endpoint-reconciler-type=none: the reconciler of the "kubernetes"
	// Service's endpoints refuses a loopback advertise address and the
	// server exits; nothing here uses that Service.
	c.apiserver, err = startProcess(bin, filepath.Join(c.Dir, "kube-apiserver.log"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none", "--secure-port="+strconv.Itoa(ports[0]),
		"--tls-cert-file="+filepath.Join(pki, "serving.crt"), "--tls-private-key-file="+filepath.Join(pki, "serving.key"),
		"--cert-dir="+pki,
		"--token-auth-file="+tokens, "--authorization-mode=RBAC", "--anonymous-auth=false",
		"--service-account-issuer=https://kubernetes.default.svc", "--api-audiences=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(pki, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
		"--enable-priority-and-fairness=false", "--disable-admission-plugins=ServiceAccount",
		"--profiling=false", "--v=0",
	)
	if err != nil {
		return err
	}
	if err := c.apiserver.waitHTTP(ctx, c.Server+"/readyz", c); err != nil {
		log := filepath.Join(c.Dir, "kube-apiserver.log")
		return fmt.Errorf("kube-apiserver did not become ready: %w; the end of %s:\n%s", err, log, logTail(log, 2048))
	}
	return nil
}

// Config is a client configuration of the admin.
func (c *Cluster) Config() *kube.Config {
	return &kube.Config{Server: c.Server, CAData: c.CAData, Token: c.Token, Namespace: c.Namespace}
}

// Client is a client of the admin, in c's namespace.
func (c *Cluster) Client(t testing.TB) *kube.Client {
	t.Helper()
	cl, err := kube.New(c.Config())
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// Stop ends kube-apiserver, then etcd, and removes the directory when Run
// made it. Safe to call twice.
func (c *Cluster) Stop() error {
	var errs []error
	for _, p := range []*process{c.apiserver, c.etcd} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	if c.removeDir && c.Dir != "" {
		errs = append(errs, os.RemoveAll(c.Dir))
	}
	return errors.Join(errs...)
}

// process is one started program, waited on by one goroutine.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(bin, logPath string, args ...string) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary that dies takes the cluster with it: started from a
	// thread that lives as long as the test process (osthread.StartLasting
	// says why).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := osthread.StartLasting(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", filepath.Base(bin), err)
	}
	p := &process{name: filepath.Base(bin), cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, then SIGKILL after ten seconds, and waits.
func (p *process) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// errExited: a process ended while it was being waited for.
var errExited = errors.New("exited")

// exited returns the process's end when it ended.
func (p *process) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s %w: %v", p.name, errExited, p.err)
	default:
		return nil
	}
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// logTail returns the end of a log file, for error messages.
func logTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return string(b)
}
