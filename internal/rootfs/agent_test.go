package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The agent's copy lives on a read-only tmpfs of its own, is reused by a
// restarted daemon, and is replaced when the binary changes.
func TestShareAgent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs")
	}
	tmp := t.TempDir()
	src := filepath.Join(tmp, "sandbox-agent")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "agent")
	t.Cleanup(func() { Unmount(dir) })
	first, err := ShareAgent(dir, src)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(first); string(got) != "#!/bin/sh\necho v1\n" {
		t.Errorf("copy holds %q", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err == nil {
		t.Error("the agent's tmpfs is writable")
	}
	again, err := ShareAgent(dir, src)
	if err != nil || again != first {
		t.Errorf("restart: %q, %v; want the same copy %q", again, err, first)
	}
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v2\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	second, err := ShareAgent(dir, src)
	if err != nil || second == first {
		t.Fatalf("new binary: %q, %v", second, err)
	}
	if got, _ := os.ReadFile(second); !strings.Contains(string(got), "v2") {
		t.Errorf("new copy holds %q", got)
	}
	// One tmpfs on dir, not one per call.
	data, _ := os.ReadFile("/proc/self/mountinfo")
	if n := strings.Count(string(data), " "+dir+" "); n != 1 {
		t.Errorf("%d mounts on %s", n, dir)
	}
	// In huge pages where the kernel has them (see mountBinaryTmpfs).
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/shmem_enabled"); err == nil {
		for line := range strings.Lines(string(data)) {
			if strings.Contains(line, " "+dir+" ") && !strings.Contains(line, "huge=always") {
				t.Errorf("the agent's tmpfs is not in huge pages: %s", line)
			}
		}
	}
}
