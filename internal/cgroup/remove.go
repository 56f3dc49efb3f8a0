package cgroup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

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
