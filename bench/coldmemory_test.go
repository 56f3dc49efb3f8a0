package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// Every timed sample of the cold-start benchmarks (a sandboxd cold start
// or a `crun run` beside it) starts from the same state of the machine:
// what the sample before it left running has settled (sampleSettle), and
// the memory it will take has just been freed (recycleMemory).
//
// Why the memory: this machine is a VM whose balloon reports free memory
// to the hypervisor (virtio-balloon free page reporting: blocks of 2 MiB
// and more, some 2 s after they were freed), which takes the pages back.
// Touching such a page again costs the hypervisor a fault: ~10 us a page
// against ~0.4 us for a page freed a moment ago (fresh anonymous memory,
// rusage, measured in bench/results/coldstart.txt). `crun run` frees all
// it took when it ends, so its next sample takes those pages again; a
// benchmark that keeps its sandboxes takes fresh pages at each sample (a
// sandbox keeps ~2.3 MiB in its cgroup, and the kernel's share), which on
// a quiet host were handed back seconds ago: 592 pages at ~10 us is ~6 ms
// of CPU that the same start does not pay when the pages were just freed.
// Which of the two a start meets depends on what ran before it, not on
// sandboxd or crun; so both sides of the goal's ratio are measured from
// pages just freed. BENCH_NO_RECYCLE=1 leaves the memory as it is (to
// measure what a host that handed its memory back adds).

// sampleSettle is the pause before each timed sample: longer than what
// a start leaves running after its answer (the agent's warm-up of a
// process forked ahead after 20 ms, the user namespace opened ahead
// 100 ms after a start), shorter than the 2 s after which free memory is
// handed back.
const sampleSettle = 250 * time.Millisecond

// recycledMiB is how much memory recycleMemory frees before a sample:
// more than a cold start or `crun run` takes.
const recycledMiB = 32

// beforeColdSample settles and recycles memory (see above).
func beforeColdSample() {
	time.Sleep(sampleSettle)
	if os.Getenv("BENCH_NO_RECYCLE") == "" {
		recycleMemory(recycledMiB)
	}
}

// recycleMemory faults in mib MiB of fresh memory and frees it, so that
// the next allocations on the host take pages the hypervisor backs.
func recycleMemory(mib int) {
	buf, err := unix.Mmap(-1, 0, mib<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err == nil {
		unix.Munmap(buf)
	}
}

// keptMemory is the memory d's sandboxes' cgroups hold (cgroup v2
// memory.current, or v1's memory.usage_in_bytes), 0 if unreadable.
func keptMemory(d *testdaemon.Daemon) int64 {
	for _, path := range []string{
		filepath.Join("/sys/fs/cgroup", d.CgroupParent, "memory.current"),
		filepath.Join("/sys/fs/cgroup/memory", d.CgroupParent, "memory.usage_in_bytes"),
	} {
		if data, err := os.ReadFile(path); err == nil {
			var v int64
			if _, err := fmt.Sscan(string(data), &v); err == nil {
				return v
			}
		}
	}
	return 0
}
