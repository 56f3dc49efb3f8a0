// Package leftovers removes what a stopped sandboxd leaves on the host:
// its lxcfs (which outlives the daemon on purpose, so that running
// sandboxes keep their /proc views across a restart), mounts below its
// directories (after a crash, say), its nftables table, its cgroup
// parent and, after a crash, its host lock files. Test daemons and `make cluster-down` use it; a production host
// keeps these across restarts. The daemon itself uses RemoveKept when its
// start fails with no sandbox in its registry (nothing needs them then).
package leftovers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/hostlock"
	"github.com/sandboxd/sandboxd/internal/lxcfs"
)

// Daemon names what one daemon owns on the host.
type Daemon struct {
	StateDir, RunDir, Table, CgroupParent string
}

// Remove stops d's lxcfs, detaches every mount below its directories,
// deletes its nftables table, kills the jobs it left running (a build a
// SIGKILL interrupted), removes its (then empty) cgroup parent and its
// run directory, and removes the host lock files no daemon holds (a
// crashed one's; a stopped one removed its own). Call it after the daemon
// has stopped and its sandboxes are destroyed. Errors are ignored: each
// step is best effort and the next one still runs.
func Remove(d Daemon) {
	RemoveKept(d)
	if h, err := cgroup.Detect(); err == nil && d.CgroupParent != "" {
		h.Jobs(d.CgroupParent).Sweep()
	}
	parents, _ := filepath.Glob("/sys/fs/cgroup/*/" + d.CgroupParent)
	for _, p := range append(parents, "/sys/fs/cgroup/"+d.CgroupParent) {
		os.Remove(p)
	}
	os.RemoveAll(d.RunDir)
	hostlock.RemoveStaleIn(hostlock.Dir, "*.lock")
}

// RemoveKept removes what a daemon keeps across restarts for its running
// sandboxes: it stops d's lxcfs, detaches every mount below its
// directories (the shared binaries' tmpfs, lxcfs's mount) and deletes its
// nftables table. Call it only when d has no sandboxes. Errors are
// ignored, as in Remove.
func RemoveKept(d Daemon) {
	stopLXCFS(d.RunDir)
	for _, m := range MountsBelow(d.StateDir, d.RunDir) {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	exec.Command("nft", "delete", "table", "inet", d.Table).Run()
}

// stopLXCFS ends the lxcfs a daemon with run directory runDir started, if
// its PID file still names a running lxcfs.
func stopLXCFS(runDir string) {
	b, err := os.ReadFile(lxcfs.PIDFile(runDir))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "lxcfs" {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}

// MountsBelow lists the mount points below dirs, deepest first.
func MountsBelow(dirs ...string) []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for _, d := range dirs {
			if strings.HasPrefix(f[4], d+"/") {
				out = append(out, f[4])
			}
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
