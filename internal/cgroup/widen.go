package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// WidenCPU lifts S's CPU limit for a while: its cpuset becomes its
// parent's CPUs and its CPU quota none. It returns the function that puts
// back the cpuset and quota S had, which the caller must call (deferred)
// whatever happens; on error nothing was changed that is not put back.
//
// Why: a gVisor restore is CPU work (loading the checkpoint's pages, then
// its kernel), and a sandbox limited to one CPU does all of it on that
// one, while the host's other CPUs may be idle. The sandbox's own limit
// applies again once it answers.
func (g *Group) WidenCPU() (restore func() error, err error) {
	var undo []func() error
	restore = func() error {
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		return errors.Join(errs...)
	}
	for _, f := range g.cpuFiles() {
		old, err := os.ReadFile(f.path)
		if errors.Is(err, os.ErrNotExist) {
			continue // that controller is not there (v2 without cpuset, say)
		}
		if err != nil {
			return nil, errors.Join(err, restore())
		}
		wide := f.wide
		if wide == "" { // the cpuset: the parent's CPUs
			parent, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(f.path)), "cpuset.cpus.effective"))
			if errors.Is(err, os.ErrNotExist) {
				parent, err = os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(f.path)), "cpuset.cpus"))
			}
			if err != nil {
				return nil, errors.Join(err, restore())
			}
			wide = strings.TrimSpace(string(parent))
		}
		prev := strings.TrimSpace(string(old))
		if prev == "" || prev == wide {
			continue
		}
		if err := writeFile(f.path, wide); err != nil {
			return nil, errors.Join(err, restore())
		}
		path := f.path
		undo = append(undo, func() error { return writeFile(path, prev) })
	}
	return restore, nil
}

// cpuFile is one file of S's CPU limit and its value without the limit
// ("" for a cpuset: the parent's CPUs).
type cpuFile struct{ path, wide string }

// cpuFiles are S's CPU limit files: the quota, then the cpuset (a v1
// quota of -1 and v2's "max" lift the quota; the period stays).
func (g *Group) cpuFiles() []cpuFile {
	if g.host.Unified != "" {
		dir := filepath.Join(g.host.Unified, g.Path)
		return []cpuFile{{filepath.Join(dir, "cpu.max"), "max"}, {filepath.Join(dir, "cpuset.cpus"), ""}}
	}
	var out []cpuFile
	if mp := g.host.v1With("cpu.cfs_quota_us"); mp != "" {
		out = append(out, cpuFile{filepath.Join(mp, g.Path, "cpu.cfs_quota_us"), "-1"})
	}
	if mp := g.host.v1With("cpuset.cpus"); mp != "" {
		out = append(out, cpuFile{filepath.Join(mp, g.Path, "cpuset.cpus"), ""})
	}
	return out
}

// v1With is the v1 hierarchy whose root has the file name (the one of its
// controller, whichever others are mounted with it); "" when none has.
func (h *Host) v1With(name string) string {
	for _, mp := range h.hierarchies {
		if _, err := os.Stat(filepath.Join(mp, name)); err == nil {
			return mp
		}
	}
	return ""
}
