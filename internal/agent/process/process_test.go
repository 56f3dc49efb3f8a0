package process

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/agent/agenttest"
)

// The test binary doubles as the spawn wrapper: the manager re-executes
// /proc/self/exe to start each process, as the agent does.
func TestMain(m *testing.M) { agenttest.Main(m) }

// newManager makes a manager of the test's own, with the process-wide
// reaper (there may be only one waiter on this process's children).
func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	cfg.Reaper = agenttest.Reaper(t)
	cfg.LogDir = filepath.Join(t.TempDir(), "logs")
	cfg.CgroupRoot = filepath.Join(t.TempDir(), "none")
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func waitDone(t *testing.T, p *Proc) Info {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(time.Minute):
		t.Fatalf("process %s did not end: %+v", p.ID(), p.Info())
	}
	return p.Info()
}

func readLog(t *testing.T, p *Proc, st Stream) string {
	t.Helper()
	r, err := p.LogReader(st)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A process's record says how it ended, and its two streams are kept
// apart in its logs.
func TestStartRecordsTheExitAndBothStreams(t *testing.T) {
	m := newManager(t, Config{})
	p, err := m.Start(t.Context(), StartOptions{ID: "job", Command: "echo out; echo err >&2; exit 3", Env: os.Environ(), Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	info := waitDone(t, p)
	if info.Status != Failed || info.ExitCode == nil || *info.ExitCode != 3 || info.EndTime == nil || info.PID <= 0 {
		t.Errorf("record of a process that exited 3: %+v", info)
	}
	if out, errOut := readLog(t, p, Stdout), readLog(t, p, Stderr); out != "out\n" || errOut != "err\n" {
		t.Errorf("stdout %q, stderr %q; want \"out\\n\" and \"err\\n\"", out, errOut)
	}
	if got, err := m.Get("job"); err != nil || got != p {
		t.Errorf("Get(job) = %v, %v", got, err)
	}
	if _, err := m.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(nope) error = %v, want ErrNotFound", err)
	}
}

// The manager refuses a second process of one ID and a process beyond its
// bound, and a kill ends a running one with the status killed.
func TestLimitsAndKill(t *testing.T) {
	m := newManager(t, Config{MaxRunning: 1})
	p, err := m.Start(t.Context(), StartOptions{ID: "sleeper", Command: "sleep 600", Env: os.Environ(), Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(t.Context(), StartOptions{ID: "sleeper", Command: "true", Env: os.Environ(), Cwd: "/"}); !errors.Is(err, ErrExists) {
		t.Errorf("a second process named sleeper: %v, want ErrExists", err)
	}
	if _, err := m.Start(t.Context(), StartOptions{Command: "true", Env: os.Environ(), Cwd: "/"}); !errors.Is(err, ErrLimit) {
		t.Errorf("a process beyond MaxRunning 1: %v, want ErrLimit", err)
	}
	if m.Running() != 1 {
		t.Errorf("Running() = %d, want 1", m.Running())
	}
	p.Kill(t.Context(), unix.SIGTERM, 5*time.Second, "test")
	if info := waitDone(t, p); info.Status != Killed {
		t.Errorf("record after a kill: %+v, want status killed", info)
	}
	if err := m.Remove("sleeper"); err != nil {
		t.Errorf("Remove of an ended process: %v", err)
	}
	if _, err := m.Get("sleeper"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Remove: %v, want ErrNotFound", err)
	}
}

// An agent restarted reads its predecessor's records: a process that had
// not ended is recorded as killed with the reason, and an ended one keeps
// its exit code and its logs.
func TestRestoreMarksTheUnfinishedKilled(t *testing.T) {
	m := newManager(t, Config{})
	p, err := m.Start(t.Context(), StartOptions{ID: "done", Command: "echo kept", Env: os.Environ(), Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, p)
	records := append(m.Records(), Info{ID: "was-running", Command: "sleep 600", Status: Running, PID: 12345})
	restored := newManager(t, Config{})
	restored.cfg.LogDir = m.cfg.LogDir // the logs are on the sandbox's disk, where the new agent finds them
	restored.Restore(records, ReasonAgentRestarted)
	if got, err := restored.Get("was-running"); err != nil || got.Info().Status != Killed || got.Info().Reason != ReasonAgentRestarted {
		t.Errorf("a record that had not ended, restored: %+v, %v", got, err)
	}
	got, err := restored.Get("done")
	if err != nil {
		t.Fatal(err)
	}
	if info := got.Info(); info.Status != Completed || info.ExitCode == nil || *info.ExitCode != 0 {
		t.Errorf("an ended record, restored: %+v", info)
	}
	if out := readLog(t, got, Stdout); out != "kept\n" {
		t.Errorf("its stdout after the restore: %q, want \"kept\\n\"", out)
	}
}
