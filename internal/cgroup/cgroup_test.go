package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseProcCgroups(t *testing.T) {
	data := []byte(`#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
memory	4	56	1
pids	8	12	1
hugetlb	0	1	0
`)
	got := parseProcCgroups(data)
	want := map[string]float64{"cpuset": 1, "memory": 56, "pids": 12}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parseProcCgroups = %v, want %v", got, want)
	}
}

func TestCheckPathRefusesShallowPaths(t *testing.T) {
	for _, p := range []string{"", "/", "/sandboxd", "/sandboxd/", "sandboxd/k", "/sandboxd/../k", "/sandboxd//k"} {
		if checkPath(p) == nil {
			t.Errorf("checkPath(%q) accepted", p)
		}
	}
	if err := checkPath("/sandboxd/abc123"); err != nil {
		t.Errorf("checkPath of a sandbox's path: %v", err)
	}
}

// testHost detects the host's layout, or skips.
func testHost(t *testing.T) *Host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates real cgroups")
	}
	h, err := Detect()
	if err != nil {
		t.Skipf("no usable cgroup layout: %v", err)
	}
	return h
}

// testGroup is a sandbox-like group of its own, removed at the end.
func testGroup(t *testing.T, h *Host) *Group {
	t.Helper()
	g := h.Group(fmt.Sprintf("/sandboxd-test-%d/%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	t.Cleanup(func() {
		g.Remove()
		for _, mp := range h.hierarchies {
			os.Remove(filepath.Dir(filepath.Join(mp, g.Path)))
		}
	})
	return g
}

func TestPrepareUserMountsOnlyCgroupProcs(t *testing.T) {
	h := testHost(t)
	g := testGroup(t, h)
	mounts, err := g.PrepareUser()
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) == 0 {
		t.Fatal("no mounts")
	}
	for _, m := range mounts {
		fi, err := os.Stat(m.Source)
		if err != nil {
			t.Fatal(err)
		}
		if fi.IsDir() || filepath.Base(m.Source) != "cgroup.procs" || filepath.Base(m.Destination) != "cgroup.procs" {
			t.Errorf("mount %s -> %s: want S/user's cgroup.procs file, never a directory", m.Source, m.Destination)
		}
	}
}

// TestRemoveKillsAndRemovesNestedCgroups repeats what a tenant with a
// writable hierarchy could leave behind: sub-cgroups several levels deep
// below S/user, each with a live process. Remove must kill them all and
// remove the whole tree, deepest first.
func TestRemoveKillsAndRemovesNestedCgroups(t *testing.T) {
	h := testHost(t)
	g := testGroup(t, h)
	if _, err := g.PrepareUser(); err != nil {
		t.Fatal(err)
	}
	var procs []*exec.Cmd
	for name, dir := range g.dirs() {
		for _, sub := range []string{"user/a", "user/a/b/c", "user/x/y"} {
			d := filepath.Join(dir, sub)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			cmd := startIn(t, d, "exec sleep 1000")
			procs = append(procs, cmd)
		}
	}
	if err := g.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if g.Exists() {
		t.Error("the group still exists after Remove")
	}
	for _, cmd := range procs {
		waitDead(t, cmd)
	}
}

// startIn starts sh -c script with the shell already in the cgroup dir (it
// moves itself before running script).
func startIn(t *testing.T, dir, script string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "echo $$ > "+filepath.Join(dir, "cgroup.procs")+" && "+script)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Wait until it is in the cgroup.
	deadline := time.Now().Add(10 * time.Second)
	for !contains(filepath.Join(dir, "cgroup.procs"), cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not join %s", cmd.Process.Pid, dir)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cmd
}

func contains(procs string, pid int) bool {
	f, err := os.Open(procs)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if sc.Text() == strconv.Itoa(pid) {
			return true
		}
	}
	return false
}

func waitDead(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("process %d ended with %v, want SIGKILL", cmd.Process.Pid, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("process %d still alive after Remove", cmd.Process.Pid)
	}
}

// TestFreeChargesEmptiesAMemoryCgroup: page cache written from inside a
// memory cgroup stays charged to it after its processes exit; freeCharges
// must release it, or the removed cgroup lingers as a dying one that holds
// a memory cgroup ID.
func TestFreeChargesEmptiesAMemoryCgroup(t *testing.T) {
	h := testHost(t)
	g := testGroup(t, h)
	if _, err := g.PrepareUser(); err != nil {
		t.Fatal(err)
	}
	var dir string
	for name, d := range g.dirs() {
		if name == "memory" || name == "unified" {
			dir = filepath.Join(d, "user")
		}
	}
	usage := "memory.usage_in_bytes"
	if h.Unified != "" {
		usage = "memory.current"
	}
	if _, err := os.Stat(filepath.Join(dir, usage)); err != nil {
		t.Skipf("no memory controller in %s: %v", dir, err)
	}
	// On disk, not on tmpfs: shmem pages cannot be reclaimed without swap.
	tmp, err := os.MkdirTemp("/var/tmp", "cgtest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	cmd := startIn(t, dir, "head -c 33554432 /dev/zero > "+filepath.Join(tmp, "f")+" && sync && cat "+filepath.Join(tmp, "f")+" >/dev/null")
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	before := readInt(t, filepath.Join(dir, usage))
	if before < 16<<20 {
		t.Skipf("only %d bytes charged after writing 32 MiB: nothing to free", before)
	}
	freeCharges(dir)
	if after := readInt(t, filepath.Join(dir, usage)); after > 4<<20 {
		t.Errorf("after freeCharges %d bytes are still charged (before: %d)", after, before)
	}
}

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestForbidChildren: on cgroup v2 the kernel itself refuses sub-cgroups
// of the user cgroup.
func TestForbidChildren(t *testing.T) {
	h := testHost(t)
	var v2 string
	for _, mp := range h.hierarchies {
		var st syscall.Statfs_t
		if syscall.Statfs(mp, &st) == nil && st.Type == 0x63677270 { // CGROUP2_SUPER_MAGIC
			v2 = mp
		}
	}
	if v2 == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	dir := filepath.Join(v2, fmt.Sprintf("sandboxd-test-%d-forbid", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if err := forbidChildren(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "child"), 0o755); err == nil {
		os.Remove(filepath.Join(dir, "child"))
		t.Fatal("a sub-cgroup of a cgroup with cgroup.max.descendants=0 was created")
	}
}
