package session

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// bootCgroups is a cgroup root with two hierarchies whose cgroup.procs
// are plain files: what is written to them can be read back.
func bootCgroups(t *testing.T) string {
	root := t.TempDir()
	for _, h := range []string{"memory", "pids"} {
		os.MkdirAll(filepath.Join(root, h), 0o755)
		os.WriteFile(filepath.Join(root, h, "cgroup.procs"), nil, 0o644)
	}
	return root
}

// The boot shell starts without the wrapper (Self names nothing that
// exists, so a start through it would fail), is moved into every user
// cgroup by the agent before it reads a line, and launched is called.
func TestWarmAtBootAdoptsTheShellIntoTheUserCgroups(t *testing.T) {
	root := bootCgroups(t)
	m := newTestManager(t, func(c *Config) {
		c.CgroupRoot = root
		c.Self = "/nonexistent/sandbox-spawn"
	})
	s, _ := m.Get(Default)
	called := false
	if err := s.WarmAtBoot(context.Background(), func() { called = true }); err != nil {
		t.Fatalf("WarmAtBoot: %v", err)
	}
	if !called {
		t.Error("launched was not called")
	}
	pid := strings.TrimSpace(mustRun(t, s, Command{Text: "echo $$"}))
	for _, h := range []string{"memory", "pids"} {
		data, _ := os.ReadFile(filepath.Join(root, h, "cgroup.procs"))
		if string(data) != pid {
			t.Errorf("%s/cgroup.procs = %q, want the shell's PID %s", h, data, pid)
		}
	}
}

// A shell whose environment names a start-up file would run it before
// the agent could move it: it starts through the wrapper (which fails
// here, proving it was used), and launched is called all the same.
func TestWarmAtBootUsesTheWrapperWhenBashHasAStartupFile(t *testing.T) {
	for _, name := range []string{"BASH_ENV", "ENV"} {
		t.Run(name, func(t *testing.T) {
			m := newTestManager(t, func(c *Config) {
				c.CgroupRoot = bootCgroups(t)
				c.Self = "/nonexistent/sandbox-spawn"
				c.BaseEnv = append(c.BaseEnv, name+"=/dev/null")
			})
			s, _ := m.Get(Default)
			called := false
			if err := s.WarmAtBoot(context.Background(), func() { called = true }); err == nil {
				t.Error("the shell started without the wrapper")
			}
			if !called {
				t.Error("launched was not called")
			}
		})
	}
}

// A shell that cannot be moved into its cgroups never runs anything: the
// start fails with the cgroup's error.
func TestWarmAtBootFailsClosed(t *testing.T) {
	m := newTestManager(t, func(c *Config) {
		c.CgroupRoot = t.TempDir()
		os.MkdirAll(filepath.Join(c.CgroupRoot, "memory", "cgroup.procs"), 0o755)
	})
	s, _ := m.Get(Default)
	err := s.WarmAtBoot(context.Background(), func() {})
	if err == nil || !strings.Contains(err.Error(), "joining cgroup") {
		t.Errorf("err = %v, want the cgroup error", err)
	}
}
