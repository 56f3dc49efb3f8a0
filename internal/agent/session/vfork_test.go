package session

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
	"github.com/sandboxd/sandboxd/internal/agent/reaper"
)

// A shell started by execChild (startVforked) gets its descriptors in
// place, its directory, its
// environment, a session of its own and no signal blocked; a program that
// cannot be executed is an error, not a hang.
func TestVforkedStart(t *testing.T) {
	var nofile syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); nofile.Cur != nofile.Max {
		t.Skip("the soft RLIMIT_NOFILE is not the hard one: shells start through syscall.StartProcess here")
	}
	r := agenttest.Reaper(t)
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	devNull, _ := os.Open(os.DevNull)
	defer devNull.Close()
	script := `echo "$V"; pwd; cat <&3; ps -o sid= -o pid= -p $$; grep -E '^(SigBlk|SigIgn):' /proc/$$/status`
	in, w, _ := os.Pipe()
	w.WriteString("three\n")
	w.Close()
	defer in.Close()
	// stdin /dev/null, stdout and stderr the file, 3 the pipe.
	files := []*os.File{devNull, out, out, in}
	ended := make(chan reaper.Status, 1)
	var pidfd int
	pid, err := r.Start(func() (int, error) {
		p, fd, err := startVforked("/bin/bash", []string{"bash", "-c", script}, []string{"V=env-ok", "PATH=/usr/bin:/bin"}, dir, files)
		pidfd = fd
		return p, err
	}, func(st reaper.Status) { ended <- st })
	if err != nil {
		t.Fatal(err)
	}
	if pidfd < 0 {
		t.Error("no pidfd")
	} else {
		syscall.Close(pidfd)
	}
	select {
	case st := <-ended:
		if st.ExitCode() != 0 {
			t.Errorf("exit %d", st.ExitCode())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the shell did not end")
	}
	got, _ := os.ReadFile(out.Name())
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) < 6 || lines[0] != "env-ok" || lines[1] != dir || lines[2] != "three" {
		t.Fatalf("output:\n%s", got)
	}
	if f := strings.Fields(lines[3]); len(f) != 2 || f[0] != f[1] || f[1] != strconv.Itoa(pid) {
		t.Errorf("not a session leader of its own (sid pid, want %d): %q", pid, lines[3])
	}
	if lines[4] != "SigBlk:\t0000000000000000" {
		t.Errorf("blocked signals: %q", lines[4])
	}

	_, err = r.Start(func() (int, error) {
		p, _, err := startVforked(filepath.Join(dir, "missing"), []string{"missing"}, nil, dir, files)
		return p, err
	}, func(reaper.Status) {})
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("a missing program: %v, want ENOENT", err)
	}
}

// Only a start that asks for a session of its own and nothing more goes
// through execChild.
func TestVforkable(t *testing.T) {
	for _, c := range []struct {
		sys  syscall.SysProcAttr
		want bool
	}{
		{syscall.SysProcAttr{Setsid: true}, true},
		{syscall.SysProcAttr{}, false},
		{syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}, false},
		{syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}, false},
	} {
		if got := vforkable(&c.sys); got != c.want {
			t.Errorf("vforkable(%+v) = %v", c.sys, got)
		}
	}
}
