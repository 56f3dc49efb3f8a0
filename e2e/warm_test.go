package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/agentapi"
	"github.com/sandboxd/sandboxd/internal/leftovers"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// waitWarm waits until the daemon's warm pool has n sandboxes ready.
func waitWarm(t testing.TB, d *testdaemon.Daemon, n int) {
	t.Helper()
	want := "sandboxd_warm_pool{state=\"ready\"} " + string(rune('0'+n))
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest("GET", d.URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+d.Token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(body), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm pool never had %d ready", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWarmPoolHandsOutNamedSandboxes(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, d *testdaemon.Daemon) {
		waitWarm(t, d, 1)
		var gvisorID string
		var keeper procCaps
		if onGVisor(t) {
			// While it waits, one process holds CAP_SYS_ADMIN: the namer's
			// keeper; the namer dropped its own (on amd64; elsewhere the
			// namer keeps it itself, see keeper_other.go). Both must be
			// seen, or the look after the take checks nothing: it cannot
			// see the namer when it comes after the namer's linger (2 s
			// from the naming, less than a take and a runsc exec take on a
			// loaded host), and a look that reads no status counts no
			// holder.
			gvisorID = onlyGVisorContainer(t, d)
			procs := lookCaps(t, d, gvisorID)
			holders, namers := sysAdminHolders(procs)
			t.Logf("processes holding CAP_SYS_ADMIN in the waiting pool sandbox: %v of %d; the namer: %v", holders, len(procs), namers)
			wantNamers := 1
			if goruntime.GOARCH != "amd64" {
				wantNamers = 0
			}
			if len(holders) != 1 || !strings.Contains(holders[0].cmdline, " rename --stdin") || len(namers) != wantNamers {
				t.Errorf("in a waiting pool sandbox, want the namer's keeper alone to hold CAP_SYS_ADMIN and the namer without it; holders %v, namers %v, of:\n%v", holders, namers, procs)
			} else {
				keeper = holders[0]
			}
		}
		start := time.Now()
		sb := d.Client.Sandbox("from-pool")
		// The create's own call carries the name to the agent; one that a
		// caller tries to name through the daemon's internal header runs
		// under the sandbox's own name all the same. The pool's warm-up
		// calls (agentapi.Client.WarmShell) left no variable behind.
		got := trim(execNaming(t, d, "from-pool", "evil", "hostname; echo $HOSTNAME; cat /etc/hostname; grep -c from-pool /etc/hosts; pwd; echo ${SANDBOXD_WARM-none}"))
		t.Logf("create + first exec from the pool: %v", time.Since(start))
		if got != "from-pool\nfrom-pool\nfrom-pool\n1\n/workspace\nnone" {
			t.Errorf("a pooled sandbox's identity: %q", got)
		}
		if keeper.pid != "" {
			// After the take nothing holds CAP_SYS_ADMIN: the keeper, the
			// one that did, is gone (it exits once it named the sandbox)
			// or holds it no more; every status was read.
			procs := lookCaps(t, d, gvisorID)
			holders, _ := sysAdminHolders(procs)
			if len(holders) != 0 {
				t.Errorf("after the take, processes hold CAP_SYS_ADMIN: %v", holders)
			}
			for _, p := range procs {
				// The namer and its keeper may exit while the look runs.
				if !p.status && p.cmdline != "" && !strings.Contains(p.cmdline, " rename --stdin") {
					t.Errorf("after the take, the look read no capabilities of %v, so it checked nothing of it", p)
				}
			}
			if p, ok := find(procs, keeper); ok && p.status {
				t.Logf("after the take the keeper %s is still there, without CAP_SYS_ADMIN", keeper.pid)
			} else {
				t.Logf("after the take the keeper %s is gone", keeper.pid)
			}
		}
		if got := trim(execNaming(t, d, "from-pool", "evil", "echo $HOSTNAME")); got != "from-pool" {
			t.Errorf("a later call with the internal name header: HOSTNAME=%q", got)
		}
		// What named it (on gVisor a process started with CAP_SYS_ADMIN
		// while the sandbox waited) is gone: nothing in the sandbox holds
		// CAP_SYS_ADMIN.
		caps := trim(run(t, sb, "cat /proc/[0-9]*/status | grep -E '^(CapEff|CapPrm):' | cut -f2"))
		for _, c := range strings.Fields(caps) {
			if v, err := strconv.ParseUint(c, 16, 64); err != nil || v&(1<<21) != 0 {
				t.Errorf("a process in the pooled sandbox holds CAP_SYS_ADMIN (or says %q):\n%s", c, run(t, sb, "ps -eo pid,args"))
				break
			}
		}
		// The pool refills; a second sandbox also comes from it, and the two
		// are distinct.
		waitWarm(t, d, 1)
		other := d.Client.Sandbox("also-pooled")
		run(t, sb, "echo mine > /workspace/f")
		if code, _ := exitOf(t, other, "test -e /workspace/f"); code == 0 {
			t.Error("two pooled sandboxes share a disk")
		}
		// Options other than the defaults do not take from the pool, and work.
		custom := d.Client.Sandbox("custom", client.WithEnv(map[string]string{"X": "1"}))
		if got := trim(run(t, custom, "hostname; echo $X")); got != "custom\n1" {
			t.Errorf("custom sandbox: %q", got)
		}
		// Nor can a caller name a sandbox that did not come from the pool.
		if got := trim(execNaming(t, d, "custom", "evil", "echo $HOSTNAME")); got != "custom" {
			t.Errorf("a cold-started sandbox's call with the internal name header: HOSTNAME=%q", got)
		}
		// Pooled sandboxes are ordinary: they survive a restart of the daemon.
		d.Restart(t)
		if got := trim(run(t, sb, "cat /workspace/f; hostname")); got != "mine\nfrom-pool" {
			t.Errorf("pooled sandbox after a daemon restart: %q", got)
		}
		// The agent was told the name without saving it: a new start of
		// the container has it in its own environment.
		if _, err := sb.Stop(ctxT(t, 30*time.Second)); err != nil {
			t.Fatal(err)
		}
		if got := trim(run(t, sb, "echo $HOSTNAME; hostname")); got != "from-pool\nfrom-pool" {
			t.Errorf("pooled sandbox after a stop and a new start: %q", got)
		}
		list, _ := d.Client.List(ctxT(t, 10*time.Second))
		if len(list) != 3 {
			t.Errorf("listed %d sandboxes, want 3 (pool members are not listed): %v", len(list), list)
		}
	}, "--warm-pool", "1")
}

// execNaming runs command in the sandbox id through the API with the
// agent's internal name header set to name, as a caller trying to rename
// the sandbox would, and returns its stdout.
func execNaming(t *testing.T, d *testdaemon.Daemon, id, name, command string) string {
	t.Helper()
	body, _ := json.Marshal(api.ExecRequest{Command: command})
	req, _ := http.NewRequestWithContext(ctxT(t, 60*time.Second), "POST", d.URL+"/v1/sandboxes/"+id+"/exec", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+d.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(agentapi.NameHeader, name)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res api.ExecResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK || res.ExitCode != 0 {
		t.Fatalf("exec %q: status %d, %+v, %v", command, resp.StatusCode, res, err)
	}
	return res.Stdout
}

// A daemon stopped while its warm pool is starting a sandbox leaves
// nothing of the pool on the host: no container, cgroup, mount, link or
// directory. The pool of 2 starts one sandbox at a time, so the second
// start begins as the first joins the pool, and the stop lands in it.
func TestStopWhileThePoolStartsLeavesNothing(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	if clusterGateway != nil {
		t.Skip("stops a daemon of its own")
	}
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--warm-pool", "2"}})
	waitWarm(t, d, 1)
	keys := noteKeys(d)
	d.Stop(t)
	if !strings.Contains(d.Logs(), "start was cut short by the shutdown") {
		t.Log("the second pool start ended before the stop (a loaded host); only the ready one was checked")
	}
	if len(keys) == 0 {
		t.Fatal("the pool left no state directory to look for; the check is blind")
	}
	state := hostState(t, d)
	for key := range keys {
		if strings.Contains(state, key) {
			t.Errorf("the stopped daemon's pool sandbox %s left host state:\n%s", key, state)
		}
	}
	// The agent's and lxcfs's mounts are the daemon's, kept for the next.
	for _, m := range leftovers.MountsBelow(d.StateDir, d.RunDir) {
		for key := range keys {
			if strings.Contains(m, key) {
				t.Errorf("the stopped daemon's pool sandbox %s left a mount: %s", key, m)
			}
		}
	}
}

// onlyGVisorContainer returns the ID of the one container runsc runs for
// d.
func onlyGVisorContainer(t *testing.T, d *testdaemon.Daemon) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(testdaemon.BinDir(t), "runsc"), "--root", filepath.Join(d.RunDir, "runtime", "runsc"), "list").CombinedOutput()
	if err != nil {
		t.Fatalf("runsc list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 {
		t.Fatalf("runsc list: want one container:\n%s", out)
	}
	return strings.Fields(lines[1])[0]
}

// procCaps is one process of a gVisor container as lookCaps saw it.
type procCaps struct {
	pid, cmdline string
	status       bool // its CapEff and CapPrm were read
	sysAdmin     bool // CAP_SYS_ADMIN (bit 21) in its effective or permitted set
}

// lookCapsScript prints each process's command line and capabilities.
const lookCapsScript = `for p in /proc/[0-9]*; do
	[ "$p" = /proc/$$ ] && continue
	c=
	while IFS= read -r -d '' a; do c+="$a "; done 2>/dev/null < "$p/cmdline"
	echo "PID ${p#/proc/} $c"
	while read -r k v; do
		case $k in CapEff:|CapPrm:) echo "$k $v";; esac
	done 2>/dev/null < "$p/status"
done
true`

// lookCaps returns the processes of the gVisor container id with their
// capabilities, as seen by a shell that runsc execs there with
// CAP_SYS_PTRACE (and without CAP_SYS_ADMIN), which reads every process's
// status: gVisor hides a non-dumpable process's (the namer's, its
// keeper's) from the sandbox's own processes. A process that exited
// between the listing and the read has no status (and the script still
// ends well when it was the last one listed: the namer, leaving at the
// end of its linger, failed the loop's last redirection and so the look).
func lookCaps(t *testing.T, d *testdaemon.Daemon, id string) []procCaps {
	t.Helper()
	out, err := exec.Command(filepath.Join(testdaemon.BinDir(t), "runsc"), "--root", filepath.Join(d.RunDir, "runtime", "runsc"),
		"exec", "--cap", "CAP_SYS_PTRACE", id, "/bin/bash", "-c", lookCapsScript).CombinedOutput()
	if err != nil {
		t.Fatalf("runsc exec: %v\n%s", err, out)
	}
	var procs []procCaps
	for _, line := range strings.Split(string(out), "\n") {
		switch name, value, _ := strings.Cut(line, " "); {
		case name == "PID":
			pid, cmdline, _ := strings.Cut(value, " ")
			procs = append(procs, procCaps{pid: pid, cmdline: cmdline})
		case (name == "CapEff:" || name == "CapPrm:") && len(procs) > 0:
			p := &procs[len(procs)-1]
			v, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
			p.status = true
			p.sysAdmin = p.sysAdmin || err != nil || v&(1<<21) != 0
		}
	}
	return procs
}

// sysAdminHolders returns the processes of procs that hold CAP_SYS_ADMIN
// and, of the namer's (`sandbox-agent rename --stdin ...`; its keeper
// shares its memory, so its command line too), those that do not.
func sysAdminHolders(procs []procCaps) (holders, namers []procCaps) {
	for _, p := range procs {
		if p.sysAdmin {
			holders = append(holders, p)
		} else if strings.Contains(p.cmdline, " rename --stdin") {
			namers = append(namers, p)
		}
	}
	return holders, namers
}

// find returns the process of procs with want's PID, if any.
func find(procs []procCaps, want procCaps) (procCaps, bool) {
	for _, p := range procs {
		if p.pid == want.pid {
			return p, true
		}
	}
	return procCaps{}, false
}
