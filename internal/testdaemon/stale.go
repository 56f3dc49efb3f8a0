package testdaemon

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/leftovers"
)

// A test process that is killed (a `go test -timeout` ends it with a
// panic, a CI job's cancel may SIGKILL it) runs neither its tests'
// cleanups nor onStopSignal: its daemons, in process groups of their own,
// run on with their sandboxes, mounts, nftables tables and cgroups, and a
// daemon that was down stays down with them (one such run directory
// still had 4 mounts). Each daemon's run directory therefore names its
// owner, and the next test process to start a daemon tears down what
// owners that are gone left behind, as their cleanups would have.

// ownerFile is the record, in a test daemon's run directory, of what it
// belongs to.
const ownerFile = "testdaemon.json"

// staleGlob matches the run directories of test daemons (Start).
const staleGlob = "/tmp/sbd*"

type owner struct {
	// PID and Start (in clock ticks after boot, as /proc/PID/stat gives
	// it) name the test process; a PID alone may be another's by now.
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`

	StateDir     string `json:"stateDir"`
	Table        string `json:"table"`
	CgroupParent string `json:"cgroupParent"`

	// The daemon as last started: its process and address.
	DaemonPID   int    `json:"daemonPid,omitempty"`
	DaemonStart uint64 `json:"daemonStart,omitempty"`
	URL         string `json:"url,omitempty"`
}

// valid reports whether o names what a test daemon has: an owner, a state
// directory that is an absolute path below the root, a table and a cgroup
// parent. Anything else is left alone: leftovers.Remove detaches every
// mount below the directories it is given (an empty one would be the
// whole host) and removes the cgroups its parent's name matches.
func (o owner) valid() bool {
	return o.PID > 0 && o.Start != 0 && filepath.IsAbs(o.StateDir) && filepath.Clean(o.StateDir) != "/" &&
		o.Table != "" && o.CgroupParent != "" && !strings.ContainsAny(o.CgroupParent, "/*?[")
}

// writeOwner records d's owner (this process) and its daemon's process,
// pid, in d's run directory.
func (d *Daemon) writeOwner(pid int) error {
	o := owner{PID: os.Getpid(), Start: startTime(os.Getpid()), StateDir: d.StateDir, Table: d.Table,
		CgroupParent: d.CgroupParent, DaemonPID: pid, DaemonStart: startTime(pid), URL: d.URL}
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	tmp := filepath.Join(d.RunDir, ownerFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(d.RunDir, ownerFile))
}

// startTime is process pid's start time in clock ticks after boot, or 0
// when there is no such process or it has ended (a zombie, which its
// parent has not waited for yet).
func startTime(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command (field 2) is in parentheses and may hold spaces; the
	// state is field 3, the first after it, and the start time field 22.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 || f[0] == "Z" {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// alive reports whether process pid is the one that started at start,
// and has not ended.
func alive(pid int, start uint64) bool {
	return pid > 0 && start != 0 && startTime(pid) == start
}

var sweepOnce sync.Once

// sweepStale tears down, once per process, the test daemons whose owner
// process is gone (sweepStaleNow).
func sweepStale(logf func(string, ...any)) { sweepOnce.Do(func() { sweepStaleNow(logf) }) }

// sweepStaleNow tears down the test daemons whose owner process is gone:
// through its API when the daemon still runs (every sandbox destroyed,
// then the daemon stopped), then whatever containers its runtimes still
// hold, and what leftovers.Remove removes; then its directories, once
// nothing is mounted below them. A run directory without an owner record
// (one of an older build, or one being set up) is left alone.
func sweepStaleNow(logf func(string, ...any)) {
	records, _ := filepath.Glob(filepath.Join(staleGlob, ownerFile))
	for _, path := range records {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var o owner
		if err := json.Unmarshal(data, &o); err != nil || !o.valid() || alive(o.PID, o.Start) {
			continue
		}
		run := filepath.Dir(path)
		logf("testdaemon: the test process %d that started the daemon in %s is gone: tearing it down", o.PID, run)
		tearDownStale(run, o, logf)
	}
}

func tearDownStale(run string, o owner, logf func(string, ...any)) {
	d := &Daemon{StateDir: o.StateDir, RunDir: run, Table: o.Table, CgroupParent: o.CgroupParent, URL: o.URL}
	if alive(o.DaemonPID, o.DaemonStart) {
		if tok, err := os.ReadFile(filepath.Join(o.StateDir, "token")); err == nil && o.URL != "" {
			d.Token = strings.TrimSpace(string(tok))
			if c, err := client.New(d.URL, client.WithToken(d.Token)); err == nil {
				d.Client = c
				d.destroyThroughAPI(logf)
			}
		}
		// Not our child: its new parent waits for it.
		syscall.Kill(o.DaemonPID, syscall.SIGTERM)
		deadline := time.Now().Add(20 * time.Second)
		for alive(o.DaemonPID, o.DaemonStart) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(o.DaemonPID, o.DaemonStart) {
			syscall.Kill(o.DaemonPID, syscall.SIGKILL)
		}
	}
	deleteContainers(run, logf)
	leftovers.Remove(leftovers.Daemon{StateDir: o.StateDir, RunDir: run, Table: o.Table, CgroupParent: o.CgroupParent})
	if m := leftovers.MountsBelow(o.StateDir, run); len(m) > 0 {
		logf("testdaemon: %d mounts are left below %s and %s; leaving the directories", len(m), o.StateDir, run)
		return
	}
	os.RemoveAll(run)
	if o.StateDir != "" {
		os.RemoveAll(o.StateDir)
		os.Remove(filepath.Dir(o.StateDir)) // t.TempDir's parent, when it is empty
	}
}

// deleteContainers force-deletes the containers that each OCI runtime
// still holds in run's state roots: a daemon that died before its owner
// left its sandboxes running.
func deleteContainers(run string, logf func(string, ...any)) {
	for _, rt := range []string{"crun", "runc", "runsc"} {
		root := filepath.Join(run, "runtime", rt)
		if _, err := os.Stat(root); err != nil {
			continue
		}
		bin := rt
		if rt == "runsc" {
			bin = runscPath()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, bin, "--root", root, "list", "--quiet").Output()
		if err != nil {
			cancel()
			continue
		}
		for _, id := range strings.Fields(string(out)) {
			if out, err := exec.CommandContext(ctx, bin, "--root", root, "delete", "--force", id).CombinedOutput(); err != nil {
				logf("testdaemon: %s delete --force %s: %v %s", rt, id, err, out)
			}
		}
		cancel()
	}
}

// runscPath is the runsc a test daemon ran: the one next to its sandboxd
// (SANDBOXD_BIN_DIR, else the bin/ `make build` fills), else the one on
// $PATH.
func runscPath() string {
	for _, dir := range []string{os.Getenv("SANDBOXD_BIN_DIR"), filepath.Join(moduleRoot(), "bin")} {
		if p := filepath.Join(dir, "runsc"); dir != "" && fileExists(p) {
			return p
		}
	}
	return "runsc"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
