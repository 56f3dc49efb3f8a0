// Package cgroup splits a sandbox's cgroup in two: the OCI runtime creates
// the sandbox cgroup S with the sandbox's limits; this package adds S/user,
// where every user process runs under slightly lower limits, so that an OOM
// or a fork bomb in user code is contained there and never takes the agent
// (which stays in S, or S/agent on cgroup v2) with it.
//
// It works on cgroup v2 (unified) and v1 (including the hybrid layout). It
// must never touch a cgroup outside the paths it is given.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MountDir is where the user sub-cgroup directories appear inside a
// sandbox: one directory per hierarchy, each with a cgroup.procs file that
// the agent's spawn wrapper writes its own PID to.
const MountDir = "/.sandboxd/cgroup"

// splitControllers are the controllers whose limits are split between the
// agent and user code.
var splitControllers = []string{"memory", "pids"}

// Host is the host's cgroup layout.
type Host struct {
	// Unified is the cgroup2 mount point when the host is cgroup v2 only.
	Unified string
	// V1 maps each split controller to its v1 hierarchy's mount point.
	V1 map[string]string
	// hierarchies lists every cgroup mount point (v1 hierarchies and the
	// v2 one, hybrid included): the runtime creates the sandbox's cgroup in
	// all of them, and Remove removes it from all of them.
	hierarchies []string
	// cgroup2 is the cgroup2 mount point, on a v2 host and on a hybrid
	// one (where it has no controllers but still tracks processes);
	// empty on a v1-only host.
	cgroup2 string
}

// Detect reads the cgroup layout from /proc/self/mountinfo.
func Detect() (*Host, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := &Host{V1: map[string]string{}}
	var unified string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options optional... - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 > len(fields) || len(fields) < 5 {
			continue
		}
		mountPoint, fsType, superOpts := fields[4], fields[sep+1], fields[sep+3]
		if fsType == "cgroup" || fsType == "cgroup2" {
			h.hierarchies = append(h.hierarchies, mountPoint)
		}
		switch fsType {
		case "cgroup2":
			if h.cgroup2 == "" {
				h.cgroup2 = mountPoint
			}
			if mountPoint == "/sys/fs/cgroup" {
				unified = mountPoint
			}
		case "cgroup":
			for _, opt := range strings.Split(superOpts, ",") {
				for _, c := range splitControllers {
					if opt == c {
						h.V1[c] = mountPoint
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if unified != "" {
		h.Unified = unified
		h.V1 = nil
		return h, nil
	}
	for _, c := range splitControllers {
		if h.V1[c] == "" {
			return nil, fmt.Errorf("cgroup v1 controller %q is not mounted", c)
		}
	}
	return h, nil
}

// Group is one sandbox's cgroup, S, at Path below every hierarchy's root.
type Group struct {
	host *Host
	Path string
}

// Group returns the sandbox cgroup at path (the OCI cgroupsPath, absolute).
func (h *Host) Group(path string) *Group { return &Group{host: h, Path: path} }

// dirs maps a hierarchy name to S's directory in it.
func (g *Group) dirs() map[string]string {
	if g.host.Unified != "" {
		return map[string]string{"unified": filepath.Join(g.host.Unified, g.Path)}
	}
	m := map[string]string{}
	for c, mp := range g.host.V1 {
		m[c] = filepath.Join(mp, g.Path)
	}
	return m
}

// PrepareUser creates S and S/user in every hierarchy, before the runtime
// creates the container, and returns the mounts that expose each S/user's
// cgroup.procs file inside the sandbox. No controllers are enabled yet on
// v2: the runtime must still be able to put the init process into S itself.
//
// Only the cgroup.procs file is mounted, never S/user's directory: root
// user code could otherwise create sub-cgroups there. Each memory cgroup
// (v1) takes one of the kernel's 65,535 memory cgroup IDs, shared by the
// whole host, and dying ones keep theirs as long as pages are charged to
// them: a few thousand mkdirs in one sandbox would leave every other
// sandbox (and every other container on the host) unable to start. A
// bind-mounted file gives no way to its directory (`..` from a mount's root
// leads to the mount point's parent), so all user code can do with it is
// move its own processes into S/user; S/user's limit files are not there
// either. /sys/fs/cgroup inside is the runtime's read-only mount.
func (g *Group) PrepareUser() ([]specs.Mount, error) {
	var mounts []specs.Mount
	for name, dir := range g.dirs() {
		user := filepath.Join(dir, "user")
		if err := os.MkdirAll(user, 0o755); err != nil {
			return nil, fmt.Errorf("creating cgroup %s: %w", user, err)
		}
		mounts = append(mounts, specs.Mount{
			Destination: filepath.Join(MountDir, name, "cgroup.procs"),
			Type:        "bind",
			Source:      filepath.Join(user, "cgroup.procs"),
			Options:     []string{"bind", "rw", "nosuid", "nodev", "noexec"},
		})
	}
	sort.Slice(mounts, func(i, j int) bool { return mounts[i].Destination < mounts[j].Destination })
	return mounts, nil
}

// UserLimits are the limits of S/user.
type UserLimits struct {
	MemoryBytes int64
	Pids        int64
}

// SplitNeedsInit reports whether Split needs the container's init: on v2
// it moves init into S/agent, so it runs between the runtime's create and
// start. On v1 init stays in S and Split only limits S/user, which exists
// from PrepareUser on, so Split may run before the runtime does, and one
// `run --detach` can replace create and start.
func (g *Group) SplitNeedsInit() bool { return g.host.Unified != "" }

// Split runs after the runtime created the container and before it starts
// it (on v1 it may run before the runtime does: see SplitNeedsInit). On v2
// it moves the init process (host PID initPID) from S into S/agent,
// because a v2 cgroup that hands controllers to its children may hold no
// processes itself, then enables the controllers below S. On both
// versions it sets the limits of S/user.
func (g *Group) Split(initPID int, limits UserLimits) error {
	if g.host.Unified != "" {
		s := g.dirs()["unified"]
		agent := filepath.Join(s, "agent")
		if err := os.MkdirAll(agent, 0o755); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(agent, "cgroup.procs"), strconv.Itoa(initPID)); err != nil {
			return fmt.Errorf("moving agent into %s: %w", agent, err)
		}
		if err := writeFile(filepath.Join(s, "cgroup.subtree_control"), "+memory +pids"); err != nil {
			return fmt.Errorf("enabling controllers below %s: %w", s, err)
		}
		user := filepath.Join(s, "user")
		if err := forbidChildren(user); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(user, "memory.max"), strconv.FormatInt(limits.MemoryBytes, 10)); err != nil {
			return err
		}
		// No swap for user code either; absent when swap accounting is off.
		if err := writeFile(filepath.Join(user, "memory.swap.max"), "0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return writeFile(filepath.Join(user, "pids.max"), strconv.FormatInt(limits.Pids, 10))
	}
	d := g.dirs()
	if err := writeFile(filepath.Join(d["memory"], "user", "memory.limit_in_bytes"), strconv.FormatInt(limits.MemoryBytes, 10)); err != nil {
		return err
	}
	return writeFile(filepath.Join(d["pids"], "user", "pids.max"), strconv.FormatInt(limits.Pids, 10))
}

// RemoveChildren kills every process left in S's tree and removes every
// cgroup below S, in every hierarchy, so that the runtime can then remove
// S. It is only for a sandbox being torn down: the agent dies too.
func (g *Group) RemoveChildren() error { return g.remove(true) }

// Remove kills every process left in S's tree and removes S and everything
// below it from every hierarchy. The runtime removes what it created when
// it deletes the container, but not always everything (crun gives up on
// the other hierarchies when one removal fails, and knows nothing of
// S/user), so this does not rely on it.
func (g *Group) Remove() error { return g.remove(false) }

// remove empties and removes S's tree in every hierarchy, keeping S itself
// when keepS, within one deadline for all of them.
func (g *Group) remove(keepS bool) error {
	if err := checkPath(g.Path); err != nil {
		return err
	}
	deadline := time.Now().Add(removeTimeout)
	var errs []error
	for _, dir := range g.allDirs() {
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		errs = append(errs, removeTree(dir, g.Path, keepS, deadline))
	}
	return errors.Join(errs...)
}

// allDirs lists S's directory in every hierarchy the host has.
func (g *Group) allDirs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(dir string) {
		if !seen[dir] {
			seen[dir] = true
			out = append(out, dir)
		}
	}
	for _, mp := range g.host.hierarchies {
		add(filepath.Join(mp, g.Path))
	}
	for _, dir := range g.dirs() {
		add(dir)
	}
	sort.Strings(out)
	return out
}

// checkPath refuses a group path that is not at least two levels deep
// (the daemon's parent and the sandbox's key): removing a tree kills every
// process in it, and must never reach the daemon's parent or the root.
func checkPath(path string) error {
	clean := filepath.Clean("/" + path)
	if clean != path || strings.Count(clean, "/") < 2 {
		return fmt.Errorf("refusing to remove cgroup %q: not a sandbox's cgroup path", path)
	}
	return nil
}

// Exists reports whether any part of the group exists.
func (g *Group) Exists() bool {
	for _, dir := range g.allDirs() {
		if _, err := os.Stat(dir); err == nil {
			return true
		}
	}
	return false
}

func writeFile(path, value string) error {
	// cgroup files must be written in one write(2) without O_TRUNC games.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, path, err)
	}
	return nil
}

// HasParent reports whether the cgroup name (one path element) exists
// below the root of the host's first hierarchy.
func (h *Host) HasParent(name string) bool {
	if len(h.hierarchies) == 0 {
		return false
	}
	_, err := os.Stat(filepath.Join(h.hierarchies[0], name))
	return err == nil
}

// RemoveParentIfEmpty removes the cgroup name from every hierarchy where
// it holds no cgroup: a removal (rmdir) of a cgroup that still has
// children fails, so the sandboxes below it are never touched.
func (h *Host) RemoveParentIfEmpty(name string) {
	for _, mp := range h.hierarchies {
		os.Remove(filepath.Join(mp, name))
	}
}

// EnsureParent creates the cgroup name (one path element) below the root
// of every hierarchy, where the daemon's sandbox cgroups go. crun creates
// missing parents itself; runsc does not. A new v1 cpuset cgroup starts
// with no CPUs and no memory nodes, so it gets its parent's.
func (h *Host) EnsureParent(name string) error {
	for _, mp := range h.hierarchies {
		dir := filepath.Join(mp, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			cur, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil || strings.TrimSpace(string(cur)) != "" {
				continue // not a v1 cpuset, or already set
			}
			parent, err := os.ReadFile(filepath.Join(mp, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
				return fmt.Errorf("setting %s of cgroup %s: %w", f, dir, err)
			}
		}
	}
	return nil
}
