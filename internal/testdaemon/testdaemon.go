// Package testdaemon starts the real sandboxd binary on throwaway state for
// end-to-end tests and benchmarks, and tears everything down afterwards. It
// isolates each daemon it starts (state and run directories, nftables
// table, address pool) so several can run at once, also beside a real
// daemon on the same host. It is for tests only.
package testdaemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/hostlock"
	"github.com/sandboxd/sandboxd/internal/leftovers"
)

// Options tune a daemon.
type Options struct {
	// Args are extra sandboxd flags.
	Args []string
	// Subnet overrides the address pool (default: a /22 unique to this
	// daemon).
	Subnet string
	// Env is added to the daemon's environment (e.g. a failpoint).
	Env []string
	// Binary is the sandboxd to run (default: BinDir's): another build,
	// for a benchmark of before and after a change, side by side.
	Binary string
	// Token is the daemon's API token (default: the one it makes): the
	// nodes of a test cluster share one.
	Token string
	// Via is a command line the daemon is started through, which must end
	// by executing it (same PID): e.g. env(1) with --ignore-signal, for a
	// daemon that inherits what nohup or a supervisor gives it.
	Via []string
}

// Daemon is one running sandboxd.
type Daemon struct {
	URL      string
	Token    string
	StateDir string
	RunDir   string
	Table    string
	// CgroupParent is the cgroup below every hierarchy's root that holds
	// this daemon's sandbox cgroups (unique per test daemon).
	CgroupParent string
	IfacePrefix  string
	Client       *client.Client
	args         []string
	env          []string
	via          []string
	binary       string
	log          *lockedBuffer

	mu  sync.Mutex
	cmd *exec.Cmd
	// torn makes the teardown run once: a test's cleanup and a stop
	// signal's handler (onStopSignal) may both ask for it.
	torn sync.Once
	// exited is closed once cmd was waited for: the daemon's one waiter
	// (see waitFor), which every wait for its end shares.
	exited chan struct{}
}

// SkipUnlessRoot skips t when it cannot create namespaces, mounts and
// cgroups.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: starts real sandboxes (namespaces, cgroups, mounts)")
	}
}

var seq atomic.Int32

// Start builds (once) and starts a daemon, and registers its teardown.
func Start(t testing.TB, o Options) *Daemon {
	t.Helper()
	SkipUnlessRoot(t)
	bin := BinDir(t)
	sweepStale(t.Logf)
	n := int(seq.Add(1))
	state := t.TempDir()
	// Short: agent socket paths must fit in 107 bytes.
	run, err := os.MkdirTemp("/tmp", "sbd")
	if err != nil {
		t.Fatal(err)
	}
	// A pool and table unique to this process and daemon.
	pid := os.Getpid()
	subnet := o.Subnet
	if subnet == "" {
		subnet = fmt.Sprintf("10.%d.%d.0/22", 100+(pid%100), (n*4)%256)
	}
	d := &Daemon{
		StateDir: state, RunDir: run, Table: fmt.Sprintf("sbdtest%d_%d", pid, n), log: &lockedBuffer{},
		CgroupParent: fmt.Sprintf("sbdtest%d_%d", pid, n), IfacePrefix: ifacePrefix(pid, n),
		env: o.Env, binary: o.Binary, via: o.Via,
	}
	d.args = append([]string{
		"--state-dir", state, "--run-dir", run, "--listen", freeAddr(t),
		"--agent", filepath.Join(bin, "sandbox-agent"), "--subnet", subnet, "--nft-table", d.Table,
		"--iface-prefix", d.IfacePrefix, "--cgroup-parent", d.CgroupParent,
		"--default-memory", "512Mi", "--log-level", "debug",
		// No warm pool unless a test asks: pool sandboxes come and go on
		// their own, which tests that count host state cannot tell from leaks.
		"--warm-pool", "0",
		// No admission by the host's memory pressure unless a test asks:
		// the daemon reads the whole host's PSI, which the suite's own
		// load (the image build beside the e2e tests, other daemons)
		// pushes over the default 20% for seconds, and a test's create is
		// then refused (TestCLITour: CAPACITY_EXCEEDED at 24%). The rule
		// itself is tested against a fake host in internal/sandbox.
		"--memory-pressure", "0",
	}, o.Args...)
	if o.Token != "" {
		if err := os.WriteFile(filepath.Join(state, "token"), []byte(o.Token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.writeOwner(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.teardown(t) })
	stopSignals.Do(onStopSignal)
	remember(d)
	d.start(t)
	return d
}

func (d *Daemon) start(t testing.TB) {
	t.Helper()
	bin := d.binary
	if bin == "" {
		bin = filepath.Join(BinDir(t), "sandboxd")
	}
	argv := append(append(append([]string{}, d.via...), bin), d.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), d.env...)
	// Its own process group: a terminal's ^C goes to the test process
	// alone, which tears its daemons down in order (onStopSignal); a
	// daemon that got it too would stop with its sandboxes left running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	from := len(d.log.String()) // a restart keeps the log: look after this
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := waitFor(cmd)
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	addr := d.args[slicesIndex(d.args, "--listen")+1]
	d.URL = "http://" + addr
	if err := d.writeOwner(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	// Its own "serving" line from this start, not only a port that
	// answers: addr was free when it was picked, but another process may
	// have taken it since (a bucket proxy of another test's daemon did,
	// and answered an exec with 407).
	serving := func() bool {
		l := d.log.String()[from:]
		return strings.Contains(l, `msg="sandboxd serving" listen=`+addr+" ") ||
			strings.Contains(l, `"msg":"sandboxd serving","listen":"`+addr+`"`)
	}
	// A start's boot steps took 20 s, and its first log line 10 s more,
	// at load 35 (e2e beside the other packages): the wait is for a
	// daemon that hangs, not one that is slow.
	const startWait = 2 * time.Minute
	deadline := time.Now().Add(startWait)
	for {
		if tok, err := os.ReadFile(filepath.Join(d.StateDir, "token")); err == nil && serving() {
			if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
				c.Close()
				d.Token = strings.TrimSpace(string(tok))
				break
			}
		}
		select {
		case <-exited:
			t.Fatalf("sandboxd exited before it listened (%v):\n%s", cmd.ProcessState, d.Logs())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandboxd did not start within %s:\n%s", startWait, d.Logs())
		}
	}
	c, err := client.New(d.URL, client.WithToken(d.Token))
	if err != nil {
		t.Fatal(err)
	}
	d.Client = c
}

// ifacePrefix is a prefix no running daemon holds, and never the real
// daemon's "sbx": each daemon's firewall rules apply to every interface
// with its prefix, and a daemon refuses to start on a prefix another one
// holds. Three letters, the first not 's' (6,084 prefixes; the first
// letter was always 'q', 676, and test processes running at once picked
// the same one): from a start that differs by process and daemon, the
// first whose lock, and whose one- and two-letter prefixes' locks, no one
// holds. Two processes that pick the same one within a daemon's start
// are still told apart by the daemon's lock.
func ifacePrefix(pid, n int) string {
	const first, letters = "qrtuvwxyz", "abcdefghijklmnopqrstuvwxyz"
	const count = len(first) * 26 * 26
	start := pid*31 + n*677
	for i := range count {
		v := (start + i) % count
		p := string(first[v/676]) + string(letters[v/26%26]) + string(letters[v%26])
		if !prefixHeld(p) {
			return p
		}
	}
	return "q" + string(letters[start%26]) + string(letters[start/26%26])
}

// prefixHeld reports whether a running daemon holds the interface prefix
// p or one that p starts with.
func prefixHeld(p string) bool {
	for i := 1; i <= len(p); i++ {
		if hostlock.Held(hostlock.Path(hostlock.Dir, "iface", p[:i])) {
			return true
		}
	}
	return false
}

// waitFor starts the one wait for cmd's end and returns a channel closed
// after it. A process that exited is a zombie until it is waited for, and
// a zombie still takes signals: Signal(0) cannot tell it from a running
// one (a daemon that failed at once was waited for 30 s).
func waitFor(cmd *exec.Cmd) chan struct{} {
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	return exited
}

// Logs returns what the daemon has logged so far.
func (d *Daemon) Logs() string { return d.log.String() }

// Stop stops the daemon with SIGTERM and waits for it.
func (d *Daemon) Stop(t testing.TB) { d.signal(t, syscall.SIGTERM) }

// Kill kills the daemon with SIGKILL, as a crash would.
func (d *Daemon) Kill(t testing.TB) { d.signal(t, syscall.SIGKILL) }

func (d *Daemon) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	d.stop(sig, t.Errorf)
}

// stop sends sig to the daemon and waits for it (20 s, then SIGKILL and
// errorf).
func (d *Daemon) stop(sig syscall.Signal, errorf func(string, ...any)) {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.cmd = nil
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		errorf("sandboxd did not stop within 20s of %v", sig)
	}
}

// Restart starts the daemon again on the same state.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	d.Stop(t)
	d.start(t)
}

// Start starts a stopped daemon again on the same state.
func (d *Daemon) Start(t testing.TB) { d.start(t) }

// AddArgs appends flags to those of the daemon's next start (a flag given
// twice takes the later value).
func (d *Daemon) AddArgs(args ...string) { d.args = append(d.args, args...) }

// SetEnv replaces the extra environment of the daemon's next start.
func (d *Daemon) SetEnv(env ...string) { d.env = env }

// Exited waits up to limit for a daemon that should die on its own (a
// failpoint) and reports whether it did.
func (d *Daemon) Exited(limit time.Duration) bool {
	d.mu.Lock()
	cmd, exited := d.cmd, d.exited
	d.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-exited:
		d.mu.Lock()
		if d.cmd == cmd {
			d.cmd = nil
		}
		d.mu.Unlock()
		return true
	case <-time.After(limit):
		return false
	}
}

// AgentPID returns the host PID of the agent of the sandbox with the
// given key, from the runtime's state.
func (d *Daemon) AgentPID(t testing.TB, key string) int {
	t.Helper()
	for _, rt := range []string{"crun", "runc"} {
		out, err := exec.Command(rt, "--root", filepath.Join(d.RunDir, "runtime", rt), "state", "sandboxd-"+key).Output()
		if err != nil {
			continue
		}
		var st struct{ Pid int }
		if json.Unmarshal(out, &st) == nil && st.Pid > 0 {
			return st.Pid
		}
	}
	t.Fatalf("no running container for key %s", key)
	return 0
}

// Keys lists the sandbox keys that have state directories.
func (d *Daemon) Keys() []string {
	entries, _ := os.ReadDir(filepath.Join(d.StateDir, "sandboxes"))
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// teardown destroys every sandbox, stops the daemon and removes what it
// left on the host, so tests never leak mounts, netns or nft tables.
func (d *Daemon) teardown(t testing.TB) {
	d.tearDown(t.Logf, t.Errorf)
	if t.Failed() {
		t.Logf("sandboxd log (without request lines):\n%s", tail(withoutRequests(d.Logs()), 12000))
	}
}

// tearDown is teardown's work, done once, with its messages to logf and
// errorf.
func (d *Daemon) tearDown(logf, errorf func(string, ...any)) {
	d.torn.Do(func() {
		d.destroySandboxes(logf)
		d.stop(syscall.SIGTERM, errorf)
		// What the daemon leaves on the host (its lxcfs, on purpose; mounts
		// after a test that killed it) a test's daemon must not.
		leftovers.Remove(leftovers.Daemon{StateDir: d.StateDir, RunDir: d.RunDir, Table: d.Table, CgroupParent: d.CgroupParent})
		forget(d)
	})
}

// destroySandboxes destroys the running daemon's sandboxes, each as its
// tenant.
func (d *Daemon) destroySandboxes(logf func(string, ...any)) {
	d.mu.Lock()
	running := d.cmd != nil
	d.mu.Unlock()
	if running {
		d.destroyThroughAPI(logf)
	}
}

// destroyThroughAPI destroys every sandbox d.Client lists, each as its
// tenant.
func (d *Daemon) destroyThroughAPI(logf func(string, ...any)) {
	if d.Client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if list, err := d.Client.List(ctx); err == nil {
			for _, sb := range list {
				c := d.Client
				if sb.Tenant != "" && sb.Tenant != "default" {
					// A tenant's sandbox: the admin acts as its tenant.
					c, _ = client.New(d.URL, client.WithToken(d.Token), client.WithTenant(sb.Tenant))
				}
				if err := c.Sandbox(sb.ID).Destroy(ctx); err != nil {
					logf("teardown: destroying %s: %v", sb.ID, err)
				}
			}
		}
		cancel()
	}
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// BinDir returns the directory with sandboxd, sandbox, sandbox-agent,
// sandbox-spawn and sandbox-transpile: $SANDBOXD_BIN_DIR (set by `make test`), or binaries built
// once per test process.
func BinDir(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("SANDBOXD_BIN_DIR"); dir != "" {
		return dir
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "sandboxd-bin")
		if buildErr != nil {
			return
		}
		root := moduleRoot()
		for _, name := range []string{"sandboxd", "sandbox", "sandbox-agent", "sandbox-spawn", "sandbox-transpile"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, name), "./cmd/"+name)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s: %w\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// withoutRequests drops the per-request debug lines, which drown the rest.
func withoutRequests(log string) string {
	var b strings.Builder
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "level=DEBUG msg=request ") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "...\n" + s[len(s)-n:]
	}
	return s
}

// lockedBuffer collects the daemon's log.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 16<<20 {
		return len(p), nil // bounded
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// PID returns the daemon's PID, or 0 if it is not running.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return 0
	}
	return d.cmd.Process.Pid
}
