package spawn

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The test binary doubles as the agent binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		Main(os.Args[2:])
	}
	os.Exit(m.Run())
}

func TestArgv(t *testing.T) {
	got := Argv("/agent", Options{CgroupRoot: "/cg", ErrFD: 3, Argv0: "bash"}, "/bin/bash", "--norc")
	want := []string{"/agent", "spawn", "--cgroup-root", "/cg", "--errfd", "3", "--argv0", "bash", "--", "/bin/bash", "--norc"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
}

// fakeCgroups makes a cgroup root with one directory per hierarchy, each
// with an (ordinary) cgroup.procs file.
func fakeCgroups(t *testing.T, names ...string) string {
	root := t.TempDir()
	for _, n := range names {
		os.MkdirAll(filepath.Join(root, n), 0o755)
		os.WriteFile(filepath.Join(root, n, "cgroup.procs"), nil, 0o644)
	}
	return root
}

func TestSpawnJoinsCgroupsAndExecs(t *testing.T) {
	// Run with an OOM score other than 0 (the agent's is negative when it
	// may lower it; raising needs no privilege); the program must not
	// inherit it.
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("500"), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile("/proc/self/oom_score_adj", []byte("0"), 0) })
	root := fakeCgroups(t, "memory", "pids", "unified")
	os.Mkdir(filepath.Join(root, "not-a-cgroup"), 0o755) // no cgroup.procs: skipped
	cmd := exec.Command("/proc/self/exe", Argv("/proc/self/exe", Options{CgroupRoot: root, Argv0: "renamed"},
		"sh", "-c", `echo "$$ $0 $(cat /proc/self/oom_score_adj)"`)[1:]...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("spawn: %v: %s", err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) != 3 || fields[1] != "renamed" || fields[2] != "0" {
		t.Fatalf("output %q, want PID, argv0 'renamed' and oom_score_adj 0", out)
	}
	pid := fields[0]
	if pid != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("PROG ran as %s, the wrapper was %d: not exec'd in place", pid, cmd.Process.Pid)
	}
	for _, n := range []string{"memory", "pids", "unified"} {
		if b, _ := os.ReadFile(filepath.Join(root, n, "cgroup.procs")); string(b) != pid {
			t.Errorf("%s/cgroup.procs = %q, want %s", n, b, pid)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "not-a-cgroup", "cgroup.procs")); err == nil {
		t.Error("the wrapper created a cgroup.procs file")
	}
}

func TestSpawnFailures(t *testing.T) {
	unwritable := t.TempDir()
	// A directory where cgroup.procs should be: opening it for writing
	// fails even for root.
	os.MkdirAll(filepath.Join(unwritable, "memory", "cgroup.procs"), 0o755)
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing cgroup root is fine", []string{"--cgroup-root", "/no/such/dir", "--", "/bin/true"}, 0, ""},
		{"cgroup cannot be joined", []string{"--cgroup-root", unwritable, "--", "/bin/true"}, ExitSetup, "joining cgroup"},
		{"program not found", []string{"--cgroup-root", "/none", "--", "no-such-program-xyz"}, ExitExec, "no-such-program-xyz"},
		{"program not executable", []string{"--cgroup-root", "/none", "--", "/etc/hostname"}, ExitExec, "exec /etc/hostname"},
		{"no program", []string{"--"}, ExitSetup, "usage"},
		{"bad flag", []string{"--nope", "--", "/bin/true"}, ExitSetup, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("/proc/self/exe", append([]string{Arg}, tt.args...)...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tt.code || !strings.Contains(string(out), tt.msg) {
				t.Errorf("exit %d output %q, want %d containing %q", code, out, tt.code, tt.msg)
			}
		})
	}
}

func TestSpawnErrFD(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/exe", Arg, "--errfd", "3", "--", "no-such-program-xyz")
	cmd.ExtraFiles = []*os.File{w}
	out, _ := cmd.CombinedOutput()
	w.Close()
	msg := make([]byte, 512)
	n, _ := r.Read(msg)
	if len(out) != 0 || !strings.Contains(string(msg[:n]), "no-such-program-xyz") {
		t.Errorf("stderr %q, fd 3 %q: the error belongs on fd 3", out, msg[:n])
	}
}

func TestSpawnJoinsAsRootThenDropsToTheUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: drops privileges to another user")
	}
	// cgroup.procs is root's and 0644, as in a real cgroup: only a
	// wrapper that joins before it drops root can write it.
	root := fakeCgroups(t, "unified")
	procs := filepath.Join(root, "unified", "cgroup.procs")
	uid, gid := 4242, 4343
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/exe", Argv("/proc/self/exe", Options{CgroupRoot: root, ErrFD: 3, CloseErrFD: true, UID: &uid, GID: &gid},
		"sh", "-c", `echo "$(id -u) $(id -g) $(id -G)"; cat /proc/self/status | grep -i '^CapEff'`)[1:]...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin")
	cmd.ExtraFiles = []*os.File{errW}
	out, err := cmd.Output()
	errW.Close()
	msg, _ := io.ReadAll(errR)
	if err != nil || len(msg) > 0 {
		t.Fatalf("spawn: %v: %s (errfd: %q)", err, out, msg)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[0] != "4242 4343 4343" {
		t.Fatalf("identity = %q, want uid 4242, gid 4343, groups 4343", out)
	}
	if !strings.HasSuffix(lines[1], "0000000000000000") {
		t.Errorf("the user kept capabilities: %s", lines[1])
	}
	joined, _ := os.ReadFile(procs)
	if len(joined) == 0 {
		t.Errorf("the wrapper did not join the cgroup")
	}
}

func TestSpawnReportsAFailedExecOnTheErrFD(t *testing.T) {
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/proc/self/exe", Argv("/proc/self/exe", Options{CgroupRoot: t.TempDir(), ErrFD: 3, CloseErrFD: true},
		"/no/such/program")[1:]...)
	cmd.ExtraFiles = []*os.File{errW}
	err = cmd.Run()
	errW.Close()
	msg, _ := io.ReadAll(errR)
	if err == nil || !strings.Contains(string(msg), "/no/such/program") {
		t.Fatalf("run = %v, errfd %q; want a failure naming the program", err, msg)
	}
}

func TestLookupEnv(t *testing.T) {
	env := []string{"PATH=/bin", "HOME=/root", "EMPTY=", "PATH=/usr/bin:/bin", "PATHX=no"}
	for _, c := range []struct {
		name, want string
		ok         bool
	}{
		{"PATH", "/usr/bin:/bin", true}, // the last one, as a program finds it
		{"HOME", "/root", true},
		{"EMPTY", "", true},
		{"PAT", "", false},
		{"NONE", "", false},
	} {
		if got, ok := LookupEnv(env, c.name); got != c.want || ok != c.ok {
			t.Errorf("LookupEnv(%s) = %q, %v; want %q, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}
