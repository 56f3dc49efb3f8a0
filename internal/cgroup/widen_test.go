package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWidenCPUPutsTheLimitBack: a group limited to one CPU and a quota of
// one CPU has neither while widened, and exactly its limit again once the
// returned function ran.
func TestWidenCPUPutsTheLimitBack(t *testing.T) {
	h := testHost(t)
	g := testGroup(t, h)
	parent := filepath.Base(filepath.Dir(g.Path))
	if err := h.EnsureParent(parent); err != nil {
		t.Fatal(err)
	}
	files := g.cpuFiles()
	if len(files) != 2 {
		t.Skipf("no cpu and cpuset controllers here: %v", files)
	}
	for _, mp := range h.hierarchies {
		if err := os.MkdirAll(filepath.Join(mp, g.Path), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A new v1 cpuset starts empty: give it memory nodes, then one CPU.
	if h.Unified == "" {
		mems, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(files[1].path)), "cpuset.mems"))
		if err := writeFile(filepath.Join(filepath.Dir(files[1].path), "cpuset.mems"), strings.TrimSpace(string(mems))); err != nil {
			t.Fatal(err)
		}
	}
	limit := map[string]string{files[0].path: "100000 100000", files[1].path: "0"}
	if h.Unified == "" {
		limit[files[0].path] = "100000"
	}
	for path, v := range limit {
		if err := writeFile(path, v); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(data))
	}
	before := map[string]string{}
	for path := range limit {
		before[path] = read(path)
	}
	restore, err := g.WidenCPU()
	if err != nil {
		t.Fatal(err)
	}
	if q := read(files[0].path); q == before[files[0].path] || (q != "-1" && !strings.HasPrefix(q, "max")) {
		t.Errorf("quota while widened: %q (was %q)", q, before[files[0].path])
	}
	parentCPUs := read(filepath.Join(filepath.Dir(filepath.Dir(files[1].path)), "cpuset.cpus"))
	if c := read(files[1].path); c != parentCPUs {
		t.Errorf("cpuset while widened: %q, want the parent's %q", c, parentCPUs)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	for path, want := range before {
		if got := read(path); got != want {
			t.Errorf("%s after restore: %q, want %q", path, got, want)
		}
	}
}
