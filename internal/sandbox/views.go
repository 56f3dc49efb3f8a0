package sandbox

import (
	"context"
	"hash/fnv"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ProcViews gives sandboxes /proc files that describe the sandbox rather
// than the host (implemented over internal/lxcfs by the daemon).
type ProcViews interface {
	// Mounts are bind mounts over /proc (and /sys) files for a new
	// container; none when the views are unavailable.
	Mounts(ctx context.Context) []specs.Mount
}

// hostCPUs lists the CPUs the daemon may run on: a sandbox's cpuset is
// taken from them.
func hostCPUs() []int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil
	}
	var out []int
	for i := 0; i < len(set)*64 && len(out) < set.Count(); i++ {
		if set.IsSet(i) {
			out = append(out, i)
		}
	}
	return out
}

// cpusFor is the cpuset of a sandbox: as many of host's CPUs as its CPU
// limit rounded up, so that nproc (which counts the CPUs a process may run
// on) says what the sandbox can use; "" when that is every CPU. The first
// CPU depends on the sandbox's key, so that small sandboxes spread over the
// host rather than all queue on CPU 0. The CFS quota still bounds the time.
func cpusFor(key string, milliCPU int64, host []int) string {
	n := int((milliCPU + 999) / 1000)
	if milliCPU <= 0 || n >= len(host) {
		return ""
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	start := int(h.Sum32() % uint32(len(host)))
	cpus := make([]string, n)
	for i := range n {
		cpus[i] = strconv.Itoa(host[(start+i)%len(host)])
	}
	return strings.Join(cpus, ",")
}
