// Package pidguard recovers a sandbox whose user code holds every task its
// pids limit allows and keeps failing to fork: a fork bomb that detached
// from the command that started it. Such a bomb outlives its command, and
// every later command, process or fresh session shell fails to fork
// (`fork: retry`, SESSION_TERMINATED) until the sandbox restarts. Before a
// command or process starts, the guard looks at the user cgroup's pids
// counters; when they say "full and still failing", it kills every process
// in the user cgroup, as a restart would, but keeping the agent, its
// sessions' definitions and the sandbox's files.
//
// It reads the user cgroup through the sandbox's read-only /sys/fs/cgroup
// (the cgroup namespace makes the sandbox's cgroup its root) and only ever
// signals processes it found in the user cgroup; it never writes a cgroup
// file and never touches the agent, which is not in the user cgroup.
package pidguard

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where the sandbox sees its cgroup hierarchies.
const DefaultRoot = "/sys/fs/cgroup"

// killTimeout bounds a recovery: rounds of SIGKILL until the user cgroup
// is empty (a bomb forks into the slots its dead free).
const killTimeout = 30 * time.Second

// watchWindow is how long the guard watches a user cgroup that is full, or
// whose forks failed, for the other sign.
const watchWindow = 500 * time.Millisecond

// Guard watches one user cgroup.
type Guard struct {
	dir string // the user cgroup's directory in the pids hierarchy; "" if none
	log *slog.Logger

	mu sync.Mutex // one check or recovery at a time
	// failures is the fork failure count at the previous check.
	failures int64
}

// New finds the user cgroup below root (cgroup v1: root/pids/user; v2:
// root/user). Without one (tests, a host without the pids controller) the
// guard never acts.
func New(root string, log *slog.Logger) *Guard {
	g := &Guard{log: log}
	for _, dir := range []string{filepath.Join(root, "pids", "user"), filepath.Join(root, "user")} {
		if _, err := os.Stat(filepath.Join(dir, "pids.max")); err == nil {
			g.dir = dir
			break
		}
	}
	return g
}

// Check recovers the sandbox if user code is at its pids limit and forks
// fail for that limit, and reports whether it did. A failure counts if it
// happened since the previous check, not only right now: bash retries a
// failed fork after 1, 2, 4, 8 and 16 s, so a bomb's failures come in
// bursts. A sandbox in that state cannot run the command about to start
// (its shell must fork), so nothing that could still work is lost. It
// costs one small file read (it runs before every command, and on a
// freshly taken sandbox each read is several cold system calls); the
// cgroup's task count and limit are read, and up to watchWindow spent,
// only after a refused fork: a cgroup that is merely nearly full (a big
// build, a JVM's threads) costs every command nothing more.
func (g *Guard) Check() bool {
	if g == nil || g.dir == "" {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	failures, ok := g.forkFailures()
	if !ok {
		return false
	}
	failed := failures > g.failures
	g.failures = failures
	if !failed {
		return false
	}
	// A bomb's processes come and go (they exit when their retries run
	// out, and are replaced at once): after a refused fork, watch for a
	// moment whether the cgroup fills.
	full := g.full()
	deadline := time.Now().Add(watchWindow)
	for !full && time.Now().Before(deadline) {
		time.Sleep(watchWindow / 10)
		full = g.full()
	}
	if !full {
		return false
	}
	start := time.Now()
	n, empty := g.killAll()
	g.failures, _ = g.forkFailures()
	g.log.Warn("user code held every task of the pids limit and failed to fork; killed every user process (a fork bomb?)",
		"killed", n, "took", time.Since(start), "emptied", empty)
	return true
}

// full reports whether the user cgroup holds (nearly) as many tasks as its
// limit allows: within 10%, since a bomb's processes come and go.
func (g *Guard) full() bool {
	cur, ok1 := readInt(filepath.Join(g.dir, "pids.current"))
	limit, ok2 := readInt(filepath.Join(g.dir, "pids.max")) // "max": no limit, not ok
	return ok1 && ok2 && limit > 0 && cur >= limit-limit/10
}

// forkFailures is the count of forks refused for the pids limit.
func (g *Guard) forkFailures() (int64, bool) {
	data, err := os.ReadFile(filepath.Join(g.dir, "pids.events"))
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if name, v, ok := strings.Cut(sc.Text(), " "); ok && name == "max" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// killAll sends SIGKILL to every process in the user cgroup, in rounds,
// until it is empty or killTimeout passes, and returns how many signals
// it sent and whether the cgroup was emptied. (The bomb shares the
// sandbox's CPU quota with the agent, so rounds can be slow.) Each PID is signalled through a pidfd opened before checking
// that the process is still in the user cgroup, so a PID reused meanwhile
// is never hit.
func (g *Guard) killAll() (int, bool) {
	n := 0
	deadline := time.Now().Add(killTimeout)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
		if err != nil {
			return n, false
		}
		pids := strings.Fields(string(data))
		if len(pids) == 0 {
			return n, true
		}
		for _, f := range pids {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && killIfUser(pid) {
				n++
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n, false
}

func killIfUser(pid int) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if !inUserCgroup(pid) {
		return false
	}
	return unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0) == nil
}

// inUserCgroup reports whether /proc/PID/cgroup (relative to the sandbox's
// cgroup namespace) puts the process in the user cgroup.
func inUserCgroup(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && (parts[2] == "/user" || strings.HasPrefix(parts[2], "/user/")) {
			return true
		}
	}
	return false
}

func readInt(path string) (int64, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n, err == nil
}
