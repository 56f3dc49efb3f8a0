package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// removeTimeout bounds how long removing a sandbox's cgroups waits for its
// processes to finish dying, all hierarchies together.
const removeTimeout = 10 * time.Second

// removeTree removes the cgroup tree at root (root itself too unless
// keepRoot), whatever user code made of it: sub-cgroups at any depth, with
// processes in any of them. Each round kills every process left in the
// tree, then frees the memory charged to each cgroup and removes it,
// deepest first (a cgroup with children cannot be removed). Rounds repeat
// while processes finish dying, until the deadline; only a cgroup that
// still exists then is an error. group is the tree's path below the
// hierarchy's root, as /proc/PID/cgroup shows it.
func removeTree(root, group string, keepRoot bool, deadline time.Time) error {
	for {
		dirs, err := descendants(root)
		if err != nil {
			return fmt.Errorf("listing cgroup %s: %w", root, err)
		}
		if !keepRoot {
			dirs = append(dirs, root)
		}
		killTree(root, group)
		var left []string
		var lastErr error
		for _, dir := range dirs {
			freeCharges(dir)
			if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				left, lastErr = append(left, dir), err
			}
		}
		if len(left) == 0 {
			if keepRoot {
				// The runtime removes root next, without freeing the
				// agent's charges.
				freeCharges(root)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("removing cgroup %s (%d left): %w", left[0], len(left), lastErr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// descendants lists every cgroup below root, children after their own
// children (the order in which they can be removed).
func descendants(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		below, err := descendants(dir)
		if err != nil {
			return nil, err
		}
		out = append(append(out, below...), dir)
	}
	return out, nil
}

// killTree sends SIGKILL to every process in the tree at root. On cgroup
// v2 (5.14+) one write to cgroup.kill does it atomically. Otherwise each
// PID listed in the tree's cgroup.procs files is signalled through a pidfd
// opened before checking, in /proc/PID/cgroup, that the process is still
// in the tree: a PID read from a file may have been reused by a host
// process by then, a pidfd cannot come to mean another process.
func killTree(root, group string) {
	if writeFile(filepath.Join(root, "cgroup.kill"), "1") == nil {
		return
	}
	dirs, _ := descendants(root)
	for _, dir := range append(dirs, root) {
		data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(field); err == nil && pid > 1 {
				killIfIn(pid, group)
			}
		}
	}
}

func killIfIn(pid int, group string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if inGroup(pid, group) {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}

// inGroup reports whether /proc/PID/cgroup puts the process at group or
// below it in some hierarchy.
func inGroup(pid int, group string) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 && (parts[2] == group || strings.HasPrefix(parts[2], group+"/")) {
			return true
		}
	}
	return false
}

// freeCharges reclaims the memory still charged to an emptied cgroup
// before it is removed. Page cache a sandbox read or wrote (the host's
// /usr libraries included) stays charged to the cgroup that first touched
// it, and a removed memory cgroup whose pages are still charged lingers in
// the kernel as a dying cgroup that keeps its memory cgroup ID: churn
// alone drifted one host towards the 65,535 limit at about one per
// sandbox. v1 has memory.force_empty; v2 (5.19+) has memory.reclaim.
// Best effort: what cannot be reclaimed is reparented by the kernel.
func freeCharges(dir string) {
	if writeFile(filepath.Join(dir, "memory.force_empty"), "0") == nil {
		return
	}
	data, err := os.ReadFile(filepath.Join(dir, "memory.current"))
	if err != nil {
		return
	}
	if cur := strings.TrimSpace(string(data)); cur != "0" {
		writeFile(filepath.Join(dir, "memory.reclaim"), cur)
	}
}

// forbidChildren makes the kernel refuse sub-cgroups below dir (cgroup v2):
// the user cgroup is not reachable from inside (only its cgroup.procs
// file is), and this holds even if it were. Kernels before 4.14 lack the
// files; nothing is lost there that the mount does not already ensure.
func forbidChildren(dir string) error {
	for _, name := range []string{"cgroup.max.descendants", "cgroup.max.depth"} {
		if err := writeFile(filepath.Join(dir, name), "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// HostCounts returns the number of cgroups the host has per controller,
// from /proc/cgroups. On cgroup v1 the count includes dying cgroups, which
// is what matters for the memory controller: the kernel allows 65,535
// memory cgroups host-wide, and one more cannot be created, by anyone.
func HostCounts() (map[string]float64, error) {
	data, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		return nil, err
	}
	return parseProcCgroups(data), nil
}

func parseProcCgroups(data []byte) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		// subsys_name hierarchy num_cgroups enabled
		f := strings.Fields(line)
		if len(f) != 4 || strings.HasPrefix(f[0], "#") || f[3] != "1" {
			continue
		}
		if n, err := strconv.ParseFloat(f[2], 64); err == nil {
			out[f[0]] = n
		}
	}
	return out
}
