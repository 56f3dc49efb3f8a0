package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// Each case is an attempt to break out of a sandbox; the command must
// print "blocked" (or exit non-zero with no leak) for the test to pass.
func TestSandboxCannotReachTheHost(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		sb := d.Client.Sandbox("jail")
		run(t, sb, "true")
		hostShadow, _ := os.ReadFile("/etc/shadow")
		hostName, _ := os.Hostname()
		port := strings.TrimPrefix(d.URL[strings.LastIndex(d.URL, ":"):], ":")

		t.Run("host secrets are not visible", func(t *testing.T) {
			shadow := run(t, sb, "cat /etc/shadow")
			if len(hostShadow) > 0 && strings.Contains(shadow, strings.SplitN(string(hostShadow), "\n", 2)[0]) {
				t.Errorf("the host's /etc/shadow is visible")
			}
			out := run(t, sb, "ls -A /root /home; ls "+d.StateDir+" 2>&1; cat "+d.StateDir+"/token 2>&1; ls /run 2>&1; ls /.sandboxd")
			if strings.Contains(out, d.Token) || strings.Contains(out, "registry.db") {
				t.Errorf("daemon state visible:\n%s", out)
			}
			if strings.Contains(run(t, sb, "cat /etc/passwd"), os.Getenv("USER")+":x:1000") {
				t.Error("host users visible")
			}
		})
		t.Run("the mount table names no host path", func(t *testing.T) {
			// The overlay's directories are given relative to the
			// sandbox's directory and the agent is a copy on a tmpfs of
			// its own, so neither the state and run directories, the
			// binaries' directory nor the sandbox's key shows.
			out := run(t, sb, "cat /proc/self/mountinfo")
			for _, host := range []string{d.StateDir, d.RunDir, testdaemon.BinDir(t)} {
				if strings.Contains(out, host) {
					t.Errorf("host path %s shows in the sandbox's mount table:\n%s", host, out)
				}
			}
			if onGVisor(t) {
				return // gVisor's own cgroupfs names the container, key and all
			}
			for _, key := range d.Keys() {
				if strings.Contains(out, key) {
					t.Errorf("sandbox key %s shows in the sandbox's mount table:\n%s", key, out)
				}
			}
		})
		t.Run("host processes are not visible", func(t *testing.T) {
			out := run(t, sb, "ls /proc | grep -c '^[0-9]'; cat /proc/1/cmdline | tr '\\0' ' '")
			lines := strings.Split(trim(out), "\n")
			var n int
			fmt.Sscan(lines[0], &n)
			if n > 20 {
				t.Errorf("sandbox sees %d processes", n)
			}
			if !strings.Contains(lines[1], "/.sandboxd/agent") {
				t.Errorf("PID 1 is %q, want the agent", lines[1])
			}
			if strings.Contains(run(t, sb, "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '"), "sandboxd --state-dir") {
				t.Error("the daemon's process is visible")
			}
		})
		t.Run("the daemon API is unreachable", func(t *testing.T) {
			info, _ := sb.Info(ctxT(t, 10*time.Second))
			targets := []string{"127.0.0.1"}
			if info.Network.Gateway != "" {
				targets = append(targets, info.Network.Gateway)
			}
			for _, host := range targets {
				code, out := exitOf(t, sb, fmt.Sprintf(`python3 -c '
import socket; s=socket.socket(); s.settimeout(2)
try:
    s.connect(("%s", %s)); print("CONNECTED")
except OSError as e:
    print("blocked", e)'`, host, port))
				if code != 0 || strings.Contains(out, "CONNECTED") {
					t.Errorf("daemon API at %s:%s reachable from the sandbox: %s", host, port, out)
				}
			}
		})
		privileged := map[string]string{
			"mount":            "mount -t tmpfs none /mnt",
			"load a module":    `python3 -c 'import ctypes,sys; libc=ctypes.CDLL(None, use_errno=True); r=libc.syscall(175, 0, 0, b""); sys.exit(0 if r==0 else 1)'`,
			"set hostname":     "hostname evil-host",
			"remount /usr":     "mount -o remount,rw /usr",
			"write /usr":       "touch /usr/bin/evil",
			"raw socket":       `python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)'`,
			"change sysctl":    "echo 0 > /proc/sys/net/ipv4/ip_forward",
			"mknod":            "mknod /tmp/sda b 8 0",
			"raise limits":     "(for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do [ -e $f ] && echo 999999999 > $f && exit 0; done; exit 1)",
			"ptrace the agent": `python3 -c 'import ctypes,sys; libc=ctypes.CDLL(None); sys.exit(0 if libc.ptrace(16, 1, 0, 0)==0 else 1)'`,
			"kill the agent":   "kill -9 1; sleep 0.2; ! kill -0 1",
		}
		if onGVisor(t) {
			// /proc/sys and the cgroup files are gVisor's own: a write
			// changes the sandbox's view of its kernel, never the host's
			// (checked here), and root may kill PID 1, which stops the
			// sandbox until its next call (as kill -TERM 1 does anywhere).
			for _, name := range []string{"change sysctl", "raise limits", "kill the agent"} {
				delete(privileged, name)
			}
			t.Run("sysctl and cgroup writes stay in gVisor", func(t *testing.T) {
				exitOf(t, sb, "echo 0 > /proc/sys/net/ipv4/ip_forward; echo 999999999 > /sys/fs/cgroup/memory/memory.limit_in_bytes")
				if fwd, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); trim(string(fwd)) != "1" {
					t.Errorf("the host's ip_forward is %q after the sandbox wrote 0", fwd)
				}
				for _, k := range d.Keys() {
					for _, f := range []string{"/sys/fs/cgroup/memory/sandboxd/" + k + "/memory.limit_in_bytes", "/sys/fs/cgroup/sandboxd/" + k + "/memory.max"} {
						if v, err := os.ReadFile(f); err == nil && trim(string(v)) != strconv.Itoa(512<<20) {
							t.Errorf("the host's memory limit of the sandbox is %s, want %d", v, 512<<20)
						}
					}
				}
			})
		}
		for name, cmd := range privileged {
			t.Run("cannot "+name, func(t *testing.T) {
				if code, out := exitOf(t, sb, cmd); code == 0 {
					t.Errorf("%q succeeded inside the sandbox: %s", cmd, out)
				}
			})
		}
		if h, _ := os.Hostname(); h != hostName {
			t.Errorf("host hostname changed from %q to %q", hostName, h)
		}
		if _, err := os.Stat("/usr/bin/evil"); err == nil {
			os.Remove("/usr/bin/evil")
			t.Error("sandbox wrote to the host's /usr")
		}
		// The sandbox still works after all that.
		if got := trim(run(t, sb, "echo alive")); got != "alive" {
			t.Errorf("sandbox broken after attacks: %q", got)
		}
	})
}

func TestSandboxesCannotSeeEachOther(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		a, b := d.Client.Sandbox("alpha"), d.Client.Sandbox("beta")
		run(t, a, "echo secret-of-alpha > /workspace/secret; echo secret-of-alpha > /tmp/secret")
		pa := mustStart(t, a, "exec -a alpha-marker sleep 300")
		_ = pa
		if code, out := exitOf(t, b, "cat /workspace/secret /tmp/secret"); code == 0 || strings.Contains(out, "secret-of-alpha") {
			t.Errorf("beta reads alpha's files: %s", out)
		}
		if strings.Contains(run(t, b, "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '"), "alpha-marker") {
			t.Error("beta sees alpha's processes")
		}
		ai, _ := a.Info(ctxT(t, 10*time.Second))
		if ai.Network.Address != "" {
			code, out := exitOf(t, b, fmt.Sprintf(`python3 -c '
import socket; s=socket.socket(); s.settimeout(2)
try:
    s.connect(("%s", 22)); print("CONNECTED")
except ConnectionRefusedError: print("REFUSED")
except OSError as e: print("blocked", e)'`, ai.Network.Address))
			if code != 0 || strings.Contains(out, "CONNECTED") || strings.Contains(out, "REFUSED") {
				t.Errorf("beta reaches alpha's address %s: %s", ai.Network.Address, out)
			}
		}
	})
}

// mustStart runs cmd in the background of sb's default session so that it
// outlives the exec call.
func mustStart(t *testing.T, sb *client.Sandbox, cmd string) string {
	t.Helper()
	return run(t, sb, "("+cmd+") >/dev/null 2>&1 & echo $!")
}

func TestMemoryHogIsKilledAndTheAgentSurvives(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("hog", client.WithLimits(api.Limits{MemoryBytes: 128 << 20}))
	run(t, sb, "export MARK=kept")
	code, out := exitOf(t, sb, `python3 -c '
chunks = []
while True:
    chunks.append(bytearray(16 << 20))'`)
	if code == 0 {
		t.Fatalf("memory hog exited 0: %s", out)
	}
	if code != 137 {
		t.Logf("memory hog exit code %d (want 137, SIGKILL by the OOM killer): %s", code, out)
	}
	if got := trim(run(t, sb, "echo $MARK; cat /proc/1/cmdline | tr '\\0' ' '")); !strings.HasPrefix(got, "kept\n/.sandboxd/agent") {
		t.Errorf("after the OOM: %q (want the session and the agent alive)", got)
	}
}

func TestForkBombIsBoundedByPids(t *testing.T) {
	d := daemon(t)
	bomb := d.Client.Sandbox("bomb", client.WithLimits(api.Limits{Pids: 64}))
	other := d.Client.Sandbox("bystander")
	run(t, bomb, "true")
	run(t, other, "true")
	done := make(chan error, 1)
	go func() {
		_, err := bomb.Exec(ctxT(t, 60*time.Second), "bomb() { bomb | bomb & }; bomb; sleep 5", client.WithTimeout(3*time.Second))
		done <- err
	}()
	time.Sleep(time.Second)
	start := time.Now()
	if got := trim(run(t, other, "echo fine")); got != "fine" {
		t.Errorf("bystander: %q", got)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("bystander exec took %v during the fork bomb", took)
	}
	<-done
	// The bomb's sandbox recovers too.
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := bomb.Exec(ctxT(t, 30*time.Second), "echo recovered", client.WithTimeout(5*time.Second))
		if err == nil && trim(res.Stdout) == "recovered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bomb sandbox did not recover: %v %+v", err, res)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// A bomb that detaches from its command: the exec answers at once and
	// the bomb goes on, holding every task of the user cgroup. The next
	// command finds the cgroup full and still failing to fork; the agent
	// kills every user process, and the command runs.
	before := forkFailures(d)
	run(t, bomb, "setsid bash -c 'bomb() { bomb | bomb & }; bomb' </dev/null >/dev/null 2>&1 &")
	key := waitForBomb(t, d, before)
	res, err := bomb.Exec(ctxT(t, 90*time.Second), "echo recovered; ps -e --no-headers | wc -l", client.WithTimeout(60*time.Second))
	if err != nil || res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "recovered\n") {
		log, _ := os.ReadFile(filepath.Join(d.StateDir, "sandboxes", key, "agent.log"))
		t.Fatalf("first command after a detached fork bomb: %v %+v\nagent log:\n%s", err, res, log)
	}
	if n, _ := strconv.Atoi(trim(strings.SplitN(res.Stdout, "\n", 2)[1])); n > 10 {
		t.Errorf("%d processes left after the recovery, want the bomb gone", n)
	}
	if got := trim(run(t, other, "echo fine")); got != "fine" {
		t.Errorf("bystander after the detached bomb: %q", got)
	}
}

// userPids lists the user cgroup directories of the daemon's sandboxes in
// the pids hierarchy (cgroup v1 or v2), by key.
func userPids(d *testdaemon.Daemon) map[string]string {
	out := map[string]string{}
	for _, key := range d.Keys() {
		for _, dir := range []string{"/sys/fs/cgroup/pids/" + d.CgroupParent + "/" + key + "/user", "/sys/fs/cgroup/" + d.CgroupParent + "/" + key + "/user"} {
			if _, err := os.Stat(dir + "/pids.max"); err == nil {
				out[key] = dir
			}
		}
	}
	return out
}

// forkFailures is each sandbox's count of forks its user cgroup refused.
func forkFailures(d *testdaemon.Daemon) map[string]int {
	out := map[string]int{}
	for key, dir := range userPids(d) {
		data, _ := os.ReadFile(dir + "/pids.events")
		var n int
		fmt.Sscanf(string(data), "max %d", &n)
		out[key] = n
	}
	return out
}

// waitForBomb waits until a sandbox's user cgroup holds at least 90% of
// its pids limit and refused forks since before (a fork bomb took off and
// hit the limit), and returns its key.
func waitForBomb(t *testing.T, d *testdaemon.Daemon, before map[string]int) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		failures := forkFailures(d)
		for key, dir := range userPids(d) {
			cur, _ := os.ReadFile(dir + "/pids.current")
			max, _ := os.ReadFile(dir + "/pids.max")
			c, _ := strconv.Atoi(trim(string(cur)))
			m, _ := strconv.Atoi(trim(string(max)))
			if m > 0 && c >= m-m/10 && failures[key] > before[key] {
				return key
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the detached fork bomb never filled the user cgroup")
	return ""
}

// TestSeccompAppliesToEverySandbox: the daemon hands crun the filter it
// compiled for the first sandbox (run.oci.seccomp_bpf_data); later
// sandboxes must be just as confined.
func TestSeccompAppliesToEverySandbox(t *testing.T) {
	d := daemon(t)
	probe := `python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(248, 0, 0, 0, 0, 0)  # add_key: refused by the default profile
print(r, ctypes.get_errno() == 1)'; grep -c "^Seccomp:.2" /proc/self/status`
	for _, id := range []string{"sec-first", "sec-second", "sec-third"} {
		if got := trim(run(t, d.Client.Sandbox(id), probe)); got != "-1 True\n1" {
			t.Errorf("%s: seccomp probe = %q, want the syscall refused with EPERM and filter mode 2", id, got)
		}
	}
}

// TestAgentSocketCannotBeReplaced: the agent's socket used to sit in a
// directory bind-mounted read-write into the sandbox, so root inside
// could unlink it and listen in its place, and the daemon dialled the
// impostor (which answered with huge headers, or never). The socket is
// now bound on the host, in a directory the sandbox cannot see, and
// handed to the agent as a descriptor; the sandbox has no host directory
// it can write (the 10 MB below land on its own disk).
func TestAgentSocketCannotBeReplaced(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("impostor")
	const impostor = `
import os, socket, threading
os.makedirs("/.sandboxd/run", exist_ok=True)
for p in ("/.sandboxd/run/agent.sock", "/run/agent.sock"):
    try: os.unlink(p)
    except FileNotFoundError: pass
    s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen(64)
    def serve(s=s):
        while True:
            c, _ = s.accept()
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * (9 << 20) + b"\r\n\r\n")
    threading.Thread(target=serve, daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
`
	if _, err := sb.StartProcess(ctxT(t, 60*time.Second), "python3 -c '"+strings.ReplaceAll(impostor, "'", `'"'"'`)+"'"); err != nil {
		t.Fatal(err)
	}
	if got := trim(run(t, sb, "for i in $(seq 50); do ls /.sandboxd/run/agent.sock >/dev/null 2>&1 && break; sleep 0.1; done; "+
		"head -c 10000000 /dev/zero > /.sandboxd/run/fill && echo filled; rm -f /.sandboxd/run/fill; ls /.sandboxd/run")); got != "filled\nagent.sock" {
		t.Fatalf("planting the impostor: %q", got)
	}
	key := onlyKey(t, d)
	check := func(when string) {
		t.Helper()
		for i := 0; i < 5; i++ {
			if got := trim(run(t, sb, "echo real-agent")); got != "real-agent" {
				t.Errorf("%s: exec answered %q", when, got)
			}
		}
		entries, _ := os.ReadDir(filepath.Join(d.RunDir, "sandboxes", key))
		if len(entries) != 1 || entries[0].Name() != "agent.sock" {
			t.Errorf("%s: the host's socket directory holds %v, want only agent.sock", when, entries)
		}
	}
	check("with an impostor listening inside")
	d.Restart(t) // a restarted daemon finds the agent by its path again
	check("after a daemon restart")
}

// TestSandboxCannotFillTheStateDiskThroughEtc: /etc/hosts, /etc/hostname
// and /etc/resolv.conf were read-write bind mounts of files on the
// host's state filesystem, outside the disk quota (a 64 MiB sandbox wrote
// 200 MiB into /etc/hosts). They are the sandbox's own files now, on its
// disk and under its quota.
func TestSandboxCannotFillTheStateDiskThroughEtc(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("etc-filler", client.WithLimits(api.Limits{DiskBytes: 64 << 20}))
	if got := trim(run(t, sb, "cat /etc/hostname; grep -c etc-filler /etc/hosts")); got != "etc-filler\n1" {
		t.Errorf("the sandbox's own /etc/hostname and /etc/hosts: %q", got)
	}
	out := run(t, sb, `for f in hosts hostname resolv.conf; do
		head -c 100000000 /dev/zero > /etc/$f 2>/dev/null; echo $f=$?; : > /etc/$f
	done`)
	if trim(out) != "hosts=1\nhostname=1\nresolv.conf=1" {
		t.Errorf("writing 100 MB into each /etc file of a 64 MiB sandbox: %q, want every write to fail", out)
	}
	key := onlyKey(t, d)
	assertNoBigHostFiles(t, filepath.Join(d.StateDir, "sandboxes", key), 1<<20)
	run(t, sb, "echo 127.0.0.1 localhost > /etc/hosts")
}

// TestAgentLogStaysBounded: a sandbox can make its agent log a line per
// request (here: sessions for a user that cannot be created, /etc/passwd
// being a directory). The log is a file on
// the host's state filesystem; the agent keeps it under 1 MiB while it
// runs, and nothing but the agent holds it open.
func TestAgentLogStaysBounded(t *testing.T) {
	d := daemon(t)
	sb := d.Client.Sandbox("log-flooder")
	run(t, sb, "sleep 600 >/dev/null 2>&1 &")
	key := onlyKey(t, d)
	logPath := filepath.Join(d.StateDir, "sandboxes", key, "agent.log")
	agent := d.AgentPID(t, key)
	if holders := openers(logPath); len(holders) != 1 || holders[0] != agent {
		t.Errorf("the agent log is held open by %v; want only the agent (%d)", holders, agent)
	}
	// Through the agent's socket on the host, as the daemon forwards
	// requests (the sandbox itself cannot reach the socket any more).
	agentClient := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(d.RunDir, "sandboxes", key, "agent.sock"))
	}}}
	run(t, sb, "mv /etc/passwd /etc/passwd.real && mkdir /etc/passwd")
	body := `{"user":"u` + strings.Repeat("x", 30) + `"}`
	for i := 0; i < 20000; i++ {
		resp, err := agentClient.Post("http://agent/sessions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("request %d: status %d, want 400 (user cannot be created)", i, resp.StatusCode)
		}
	}
	run(t, sb, "rmdir /etc/passwd && mv /etc/passwd.real /etc/passwd")
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 1<<20 {
		t.Errorf("the agent log grew to %d bytes", len(data))
	}
	if !strings.Contains(string(data), "log cut at") {
		t.Errorf("the flood (%d bytes of log left) never reached the bound; the check is blind", len(data))
	}
	if got := trim(run(t, sb, "echo still-works")); got != "still-works" {
		t.Errorf("after: %q", got)
	}
}

// assertNoBigHostFiles fails if a file in dir, outside the sandbox's
// mounted root and disk and its disk image, takes more than limit bytes.
func assertNoBigHostFiles(t *testing.T, dir string, limit int64) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		switch rel, _ := filepath.Rel(dir, path); rel {
		case "rootfs", "disk":
			return filepath.SkipDir // mounts: the sandbox's own disk
		case "disk.img":
			return nil
		}
		var st syscall.Stat_t
		if syscall.Lstat(path, &st) == nil && st.Blocks*512 > limit {
			t.Errorf("%s takes %d bytes on the host's state filesystem", path, st.Blocks*512)
		}
		return nil
	})
}

// openers lists the host PIDs with path open.
func openers(path string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	seen := map[int]bool{}
	for _, fd := range procs {
		if target, err := os.Readlink(fd); err == nil && target == path {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			if !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
