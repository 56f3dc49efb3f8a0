package lxcfs

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// These tests run real lxcfs instances, as root, each on a mount point
// under its own temporary run directory, and stop them at the end.

func requireLXCFS(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (mounts a FUSE filesystem)")
	}
	if _, err := exec.LookPath("lxcfs"); err != nil {
		t.Skip("skipping: lxcfs is not installed (scripts/deps.sh installs it)")
	}
}

func startTest(t *testing.T, dir string, log *bytes.Buffer) *FS {
	t.Helper()
	l := slog.New(slog.NewTextHandler(log, nil))
	f := Start(context.Background(), Options{Dir: dir, Log: l})
	t.Cleanup(func() {
		if pid := readPID(PIDFile(dir)); pid > 0 && isLXCFS(pid) {
			unix.Kill(pid, unix.SIGTERM)
		}
		unix.Unmount(MountPoint(dir), unix.MNT_DETACH)
		views, _ := os.ReadDir(ViewsDir(dir)) // as the daemon's leftovers detach every mount below its directories
		for _, v := range views {
			unix.Unmount(filepath.Join(ViewsDir(dir), v.Name()), unix.MNT_DETACH)
		}
	})
	return f
}

// checkViews: each mount is one of the running instance's files, over its
// own path, bind-mounted below dir's views (the runtime looks up no name
// inside the FUSE mount), and reads.
func checkViews(t *testing.T, ms []specs.Mount, dir string) {
	t.Helper()
	views := filepath.Join(ViewsDir(dir), strconv.Itoa(readPID(PIDFile(dir))))
	for _, m := range ms {
		var st unix.Statfs_t
		if m.Source != views+m.Destination || unix.Statfs(m.Source, &st) != nil || st.Type != fuseSuperMagic {
			t.Errorf("mount %+v is not lxcfs's file over its own path below %s", m, views)
		}
		if _, err := os.ReadFile(m.Source); err != nil {
			t.Errorf("reading %s: %v", m.Source, err)
		}
	}
}

// TestTwoDaemonsTwoInstances: each daemon's instance has its own mount
// point and pidfile; a second Start on the same directory reuses the
// running instance; a dead one is replaced.
func TestTwoDaemonsTwoInstances(t *testing.T) {
	requireLXCFS(t)
	ctx := context.Background()
	var logA, logB bytes.Buffer
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := startTest(t, dirA, &logA), startTest(t, dirB, &logB)
	for _, tc := range []struct {
		f   *FS
		dir string
		log *bytes.Buffer
	}{{a, dirA, &logA}, {b, dirB, &logB}} {
		ms := tc.f.Mounts(ctx)
		if len(ms) < 5 {
			t.Fatalf("Mounts() = %v, want the /proc files (log: %s)", ms, tc.log)
		}
		checkViews(t, ms, tc.dir)
	}
	pidA, pidB := readPID(PIDFile(dirA)), readPID(PIDFile(dirB))
	if pidA <= 0 || pidB <= 0 || pidA == pidB {
		t.Fatalf("pids %d and %d: want two live instances", pidA, pidB)
	}

	// A restarted daemon reuses the running instance.
	startTest(t, dirA, &logA)
	if pid := readPID(PIDFile(dirA)); pid != pidA {
		t.Errorf("second Start on %s: pid %d, want the running %d", dirA, pid, pidA)
	}

	// Its process dies: the next sandbox gets a new instance, the other
	// daemon's is untouched.
	if err := unix.Kill(pidA, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// SIGKILL is asynchronous; the mount goes dead once the process is
	// gone (its FUSE descriptor may close a moment before the process has
	// ended, which is what Mounts watches: a start in between would get
	// the dead mount's files).
	for deadline := time.Now().Add(30 * time.Second); healthy(MountPoint(dirA)) == nil || unix.Kill(pidA, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the killed instance still runs or its mount still answers")
		}
	}
	if ms := a.Mounts(ctx); len(ms) == 0 {
		t.Fatalf("no mounts after the instance died (log: %s)", &logA)
	} else {
		checkViews(t, ms, dirA) // the new instance's, not the dead one's
	}
	if old, _ := os.ReadDir(ViewsDir(dirA)); len(old) != 1 {
		t.Errorf("views of %d instances in %s, want the running one's only", len(old), ViewsDir(dirA))
	}
	if pid := readPID(PIDFile(dirA)); pid == pidA || pid <= 0 {
		t.Errorf("after a kill: pid %d, want a new instance", pid)
	}
	if err := healthy(MountPoint(dirB)); err != nil {
		t.Errorf("the other daemon's instance: %v", err)
	}
}

func TestMissingOrBrokenLXCFS(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "lxcfs")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'cannot work here' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ binary, want string }{
		{bin, "cannot work here"},
		{filepath.Join(t.TempDir(), "missing"), "starting lxcfs"},
	} {
		var log bytes.Buffer
		f := Start(context.Background(), Options{Dir: t.TempDir(), Binary: tc.binary, Log: slog.New(slog.NewTextHandler(&log, nil))})
		if ms := f.Mounts(context.Background()); ms != nil {
			t.Errorf("Mounts() = %v, want none", ms)
		}
		if got := log.String(); !strings.Contains(got, "lxcfs unavailable") || !strings.Contains(got, tc.want) || strings.Count(got, "lxcfs unavailable") != 1 {
			t.Errorf("log = %q, want one line saying lxcfs is unavailable, with %q", got, tc.want)
		}
	}
	var nilFS *FS
	if nilFS.Mounts(context.Background()) != nil {
		t.Error("a nil FS has mounts")
	}
}
