// Package lxcfs runs the LXCFS instance of one daemon and gives sandboxes
// its files: /proc/meminfo, /proc/cpuinfo, /proc/stat, /proc/uptime (and a
// few more) and /sys/devices/system/cpu/online computed for the reading
// process's cgroup and PID namespace, so that free, top, nproc's fallbacks
// and os.cpu_count() see the sandbox's limits rather than the host.
//
// One instance per daemon, mounted at <run-dir>/lxcfs with its pidfile
// beside it, so that several daemons on one host never share or stop each
// other's. The instance outlives the daemon on purpose: running sandboxes
// keep their bind mounts of its files across a daemon restart, and a
// restarted daemon reuses a healthy instance. If its process dies, files
// bind-mounted from it fail with ENOTCONN in sandboxes that were started
// before; sandboxes started after a new instance is up see the new one.
//
// It never changes anything outside its own mount point and pidfile, and a
// missing or failing lxcfs never stops a sandbox from starting: Mounts then
// returns nothing, and the reason is logged once.
package lxcfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Files are the files of an LXCFS mount that are bind-mounted over the same
// path inside a sandbox, when the running lxcfs provides them. loadavg is
// left out: without lxcfs's --enable-loadavg (a thread that walks every
// cgroup every few seconds) it is the host's anyway.
var Files = []string{
	"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps", "/proc/uptime",
	"/sys/devices/system/cpu/online",
}

// fuseSuperMagic is statfs's f_type of a FUSE mount.
const fuseSuperMagic = 0x65735546

// startTimeout bounds the wait for a new instance's mount; retryDelay is
// how long a failed start keeps sandboxes from trying again, so that a
// broken lxcfs does not cost every sandbox start a failed run.
const (
	startTimeout = 10 * time.Second
	retryDelay   = time.Minute
)

// Options configure an FS.
type Options struct {
	// Dir is the daemon's run directory: the mount point is Dir/lxcfs, the
	// pidfile Dir/lxcfs.pid and lxcfs's output Dir/lxcfs.log.
	Dir string
	// Binary is the lxcfs program; empty: lxcfs on $PATH.
	Binary string
	Log    *slog.Logger
}

// FS is one daemon's LXCFS instance.
type FS struct {
	opts Options

	// mu serialises health checks and restarts; it guards the fields below.
	mu sync.Mutex
	// mounts are the bind mounts for a sandbox while the instance is healthy.
	mounts []specs.Mount
	// down is why the instance is not usable, once logged; empty when up.
	down string
	// retryAt is when a start may be tried again after one failed.
	retryAt time.Time
	// pidfd is a descriptor of the healthy instance's process, or -1.
	// While that process runs, Mounts trusts the instance without a
	// health check: its statfs and read are round trips to lxcfs, which
	// every sandbox start would wait for (p50 2.7 ms, p90 17 ms at load
	// 30, when lxcfs's threads wait for a CPU). A dead instance makes the
	// descriptor readable at once.
	pidfd int
}

// MountPoint is where the instance of a daemon with run directory dir is
// mounted.
func MountPoint(dir string) string { return filepath.Join(dir, "lxcfs") }

// PIDFile is the pidfile of the instance of a daemon with run directory dir.
func PIDFile(dir string) string { return filepath.Join(dir, "lxcfs.pid") }

// Start reuses the daemon's running instance or starts one. It never fails:
// without a working lxcfs, the FS's Mounts are empty and one log line says
// why (sandboxes then see the host's figures).
func Start(ctx context.Context, o Options) *FS {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	f := &FS{opts: o, pidfd: -1}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ensure(ctx)
	return f
}

// Mounts returns the bind mounts that give a sandbox the instance's views,
// or nil when lxcfs is not usable. A dead instance is restarted first.
func (f *FS) Mounts(ctx context.Context) []specs.Mount {
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mounts != nil && f.running() {
		return f.mounts
	}
	if f.mounts != nil && healthy(MountPoint(f.opts.Dir)) == nil {
		f.watch()
		return f.mounts
	}
	f.ensure(ctx)
	return f.mounts
}

// running reports whether the process f.pidfd names still runs. Called
// with mu held.
func (f *FS) running() bool {
	if f.pidfd < 0 {
		return false
	}
	fds := []unix.PollFd{{Fd: int32(f.pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 0); err == nil && n == 0 {
		return true
	}
	unix.Close(f.pidfd)
	f.pidfd = -1
	return false
}

// watch takes a descriptor of the instance's process (named by its
// pidfile) for running, once the instance was found healthy. Without one
// (no pidfile, no pidfd_open) every Mounts checks the instance's health.
// Called with mu held.
func (f *FS) watch() {
	if f.pidfd >= 0 {
		unix.Close(f.pidfd)
		f.pidfd = -1
	}
	pid := readPID(PIDFile(f.opts.Dir))
	if pid <= 0 || !isLXCFS(pid) {
		return
	}
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		f.pidfd = fd
	}
}

// ensure makes f.mounts reflect a healthy instance, starting one if needed,
// and logs a change of state once. Called with mu held.
func (f *FS) ensure(ctx context.Context) {
	mnt := MountPoint(f.opts.Dir)
	err := healthy(mnt)
	if err != nil && time.Now().Before(f.retryAt) {
		f.mounts = nil
		return
	}
	if err != nil {
		err = f.start(ctx)
	}
	if err != nil {
		f.mounts = nil
		f.retryAt = time.Now().Add(retryDelay)
		if msg := err.Error(); msg != f.down {
			f.down = msg
			f.opts.Log.Warn("lxcfs unavailable: sandboxes see the host's memory, CPUs and uptime in /proc", "err", err)
		}
		return
	}
	f.mounts = f.views(mnt)
	f.watch()
	f.down = ""
	f.opts.Log.Info("lxcfs gives sandboxes their own /proc views", "mount", mnt, "files", len(f.mounts))
}

// start clears a dead mount and runs a new lxcfs on it, then waits for the
// mount to answer.
func (f *FS) start(ctx context.Context) error {
	bin := f.opts.Binary
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("lxcfs"); err != nil {
			return fmt.Errorf("lxcfs is not installed (Debian package lxcfs): %w", err)
		}
	}
	mnt := MountPoint(f.opts.Dir)
	f.stopOld()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", mnt, err)
	}
	logPath := filepath.Join(f.opts.Dir, "lxcfs.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("creating %s: %w", logPath, err)
	}
	defer logFile.Close()
	// --enable-cfs: CPU counts from the CFS quota, not only the cpuset.
	// Its own session, so that a terminal's Ctrl-C or the daemon's exit
	// does not take it (and every sandbox's views) down.
	cmd := exec.Command(bin, "--foreground", "--enable-cfs", "--pidfile", PIDFile(f.opts.Dir), mnt)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting lxcfs: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // the reaper; lxcfs runs as long as it can
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if healthy(mnt) == nil {
			return nil
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("lxcfs exited (%v): %s", err, lastLines(string(out), 5))
		case <-ctx.Done():
			cmd.Process.Kill()
			return fmt.Errorf("lxcfs did not mount %s within %s", mnt, startTimeout)
		case <-tick.C:
		}
	}
}

// stopOld ends what a previous instance left: its process, if the pidfile
// names a live lxcfs, and its mount (detached, as a dead FUSE mount cannot
// be unmounted otherwise while bind mounts of it exist).
func (f *FS) stopOld() {
	if pid := readPID(PIDFile(f.opts.Dir)); pid > 0 && isLXCFS(pid) {
		unix.Kill(pid, unix.SIGTERM)
	}
	mnt := MountPoint(f.opts.Dir)
	for range 3 { // stacked mounts from earlier crashes
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			break
		}
	}
	// And the views of the instances before (their files answer ENOTCONN).
	old, _ := os.ReadDir(ViewsDir(f.opts.Dir))
	for _, e := range old {
		dir := filepath.Join(ViewsDir(f.opts.Dir), e.Name())
		unix.Unmount(dir, unix.MNT_DETACH)
		os.Remove(dir)
	}
}

// healthy reports whether an lxcfs mount at mnt answers.
func healthy(mnt string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		return fmt.Errorf("lxcfs mount %s: %w", mnt, err)
	}
	if st.Type != fuseSuperMagic {
		return fmt.Errorf("nothing is mounted at %s", mnt)
	}
	if _, err := os.ReadFile(filepath.Join(mnt, "proc", "uptime")); err != nil {
		return fmt.Errorf("lxcfs mount %s: %w", mnt, err)
	}
	return nil
}

// ViewsDir is where a daemon with run directory dir keeps the views it
// gives sandboxes: for each instance it uses, a tmpfs (named after the
// instance's process) with each of Files of the instance bind-mounted
// over a file of its own.
func ViewsDir(dir string) string { return filepath.Join(dir, "lxcfs-views") }

// views lists a bind mount for each of Files that mnt provides. Their
// sources are the bind mounts of viewsOf, not mnt's own files: a runtime
// that looks a source up inside lxcfs's FUSE mount makes a round trip to
// lxcfs for every name there whose entry has expired (twelve per crun
// create, 0.06 ms p50 and 0.4 ms p90 each at load 20, starts 50 ms apart),
// and through a mount of the file itself it looks up no name in it. When
// the views cannot be made, mnt's own files. Called with mu held.
func (f *FS) views(mnt string) []specs.Mount {
	dir, err := viewsOf(mnt, filepath.Join(ViewsDir(f.opts.Dir), strconv.Itoa(readPID(PIDFile(f.opts.Dir)))))
	if err != nil {
		f.opts.Log.Warn("lxcfs views are looked up in its mount at every start", "err", err)
		dir = mnt
	}
	var out []specs.Mount
	for _, name := range Files {
		// A view that is not lxcfs's file (a placeholder that a crash left
		// without its bind mount) is left out.
		src := filepath.Join(dir, name)
		var st unix.Statfs_t
		if err := unix.Statfs(src, &st); err != nil || st.Type != fuseSuperMagic {
			continue
		}
		out = append(out, specs.Mount{
			Destination: name, Type: "bind", Source: src,
			Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"},
		})
	}
	return out
}

// viewsOf mounts a tmpfs at dir (unless one is there: a restarted daemon
// reuses its instance's) and bind-mounts each of Files that mnt provides
// over a file of the same path below it.
func viewsOf(mnt, dir string) (string, error) {
	var st unix.Statfs_t
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		return dir, nil
	}
	if err := unix.Mount("lxcfs-views", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return "", fmt.Errorf("mounting %s: %w", dir, err)
	}
	for _, name := range Files {
		src, target := filepath.Join(mnt, name), filepath.Join(dir, name)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(target, nil, 0o444); err != nil {
			return "", err
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			unix.Unmount(dir, unix.MNT_DETACH)
			return "", fmt.Errorf("bind-mounting %s: %w", src, err)
		}
	}
	return dir, nil
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0
	}
	return pid
}

// isLXCFS reports whether pid is an lxcfs process, so that a stale pidfile
// never makes us signal an unrelated process that reused the PID.
func isLXCFS(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		return false
	}
	return strings.TrimSpace(string(b)) == "lxcfs"
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
