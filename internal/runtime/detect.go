package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DetectOptions configure Detect.
type DetectOptions struct {
	// Want is "auto" (crun, else runc), "crun" or "runc".
	Want string
	// StateRoot is where each runtime keeps container state
	// (StateRoot/<name>).
	StateRoot string
	// ProbeDir is a scratch directory for the probe container.
	ProbeDir string
	Log      *slog.Logger
}

// candidates in order of preference: crun starts containers about three
// times faster than runc.
var candidates = []string{"crun", "runc"}

// Detect finds an OCI runtime that can run a container on this host. It
// runs a real probe container for each candidate, so a runtime that is
// installed but cannot work with the host's cgroup layout is skipped. One
// such case is repaired: on a hybrid cgroup host where a controller
// (typically hugetlb) is attached to the v2 hierarchy, Debian's crun refuses
// to run; Detect mounts those controllers as v1 hierarchies, which is what
// a v1-first host normally does, and probes again.
func Detect(ctx context.Context, o DetectOptions) (*Runtime, error) {
	names := candidates
	if o.Want != "" && o.Want != "auto" {
		if o.Want != "crun" && o.Want != "runc" {
			return nil, fmt.Errorf("unknown runtime %q: want auto, crun or runc", o.Want)
		}
		names = []string{o.Want}
	}
	var reasons []string
	for _, name := range names {
		path, err := exec.LookPath(name)
		if err != nil {
			reasons = append(reasons, name+": not installed")
			continue
		}
		rt := New(name, path, filepath.Join(o.StateRoot, name))
		err = probe(ctx, rt, o.ProbeDir)
		if err != nil && name == "crun" && hybridControllersOnV2() {
			if ferr := mountV2ControllersAsV1(); ferr != nil {
				o.Log.Warn("could not repair the hybrid cgroup layout for crun", "err", ferr)
			} else {
				o.Log.Info("mounted cgroup v2 controllers as v1 hierarchies so crun can run on this hybrid host")
				err = probe(ctx, rt, o.ProbeDir)
			}
		}
		if err != nil {
			o.Log.Warn("OCI runtime cannot run containers here", "runtime", name, "err", err)
			reasons = append(reasons, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		if rt.sealErr != nil {
			o.Log.Warn("crun runs from its path, not from a sealed copy: each start of it mounts and executes itself again first", "err", rt.sealErr)
		}
		return rt, nil
	}
	return nil, fmt.Errorf("no working OCI runtime (%s); install crun (apt-get install crun) or runc (apt-get install runc)",
		strings.Join(reasons, "; "))
}

// GVisorOptions configure DetectGVisor.
type GVisorOptions struct {
	// Path is runsc's path; empty: "runsc" next to the daemon's own
	// binary (where `make build` puts it), else on $PATH.
	Path string
	// Platform is how gVisor intercepts system calls: "auto" (systrap),
	// "systrap", "ptrace" or "kvm".
	Platform string
	// StateRoot and ProbeDir are as in DetectOptions.
	StateRoot, ProbeDir string
}

// Platforms gVisor can be asked for. auto means systrap: it needs no
// hardware support and works in VMs; kvm needs a /dev/kvm gVisor can
// drive (it panics on some nested-virtualisation hosts), so it is only
// used when asked for.
var Platforms = []string{"auto", "systrap", "ptrace", "kvm"}

// DetectGVisor finds runsc and runs a probe container with it, the same
// kind of container a sandbox is. It fails when runsc is missing or cannot
// run a container here; the daemon then runs without gVisor.
func DetectGVisor(ctx context.Context, o GVisorOptions) (*Runtime, error) {
	path := o.Path
	if path == "" {
		path = "runsc"
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "runsc"); isExecutable(p) {
				path = p
			}
		}
	}
	path, err := exec.LookPath(path)
	if err != nil {
		return nil, fmt.Errorf("runsc not found (build it with `make build`, or pass --runsc): %w", err)
	}
	platform := o.Platform
	if platform == "" || platform == "auto" {
		platform = "systrap"
	}
	rt := NewGVisor(path, filepath.Join(o.StateRoot, "runsc"), platform)
	if err := probe(ctx, rt, o.ProbeDir); err != nil {
		rt.Close()
		return nil, fmt.Errorf("runsc (platform %s): %w", platform, err)
	}
	return rt, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// probe runs /usr/bin/true in a container with the same kind of spec a
// sandbox gets (namespaces, cgroup limits, seccomp, capabilities).
func probe(ctx context.Context, rt *Runtime, dir string) error {
	bundle := filepath.Join(dir, "probe-"+rt.Name)
	os.RemoveAll(bundle)
	defer os.RemoveAll(bundle)
	rootfs := filepath.Join(bundle, "rootfs")
	for _, d := range []string{"usr", "proc", "dev", "sys", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			return err
		}
	}
	for _, name := range []string{"bin", "lib", "lib64"} {
		if target, err := os.Readlink("/" + name); err == nil {
			os.Symlink(target, filepath.Join(rootfs, name))
		}
	}
	id := "sandboxd-probe-" + strconv.Itoa(os.Getpid())
	spec, err := NewSpec(SpecOptions{
		Hostname:    "probe",
		Rootfs:      rootfs,
		Args:        []string{"/usr/bin/true"},
		Env:         []string{"PATH=/usr/bin:/bin"},
		Mounts:      []specs.Mount{{Destination: "/usr", Type: "bind", Source: "/usr", Options: []string{"rbind", "ro"}}},
		CgroupsPath: "/sandboxd/" + id,
		Resources:   Resources{MemoryBytes: 64 << 20, MilliCPU: 500, Pids: 64},
	})
	if err != nil {
		return err
	}
	// A fresh network namespace rather than a path: the probe needs none.
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = ""
		}
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600); err != nil {
		return err
	}
	rt.Delete(ctx, id) // a leftover of a crashed probe
	args := append(rt.globalArgs(), "run", "--bundle", bundle, id)
	out, err := exec.CommandContext(ctx, rt.exe(), args...).CombinedOutput()
	rt.Delete(ctx, id)
	if err != nil {
		return fmt.Errorf("probe container failed: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// hybridControllersOnV2 reports whether the host has a v1 cgroup layout
// (tmpfs at /sys/fs/cgroup) whose v2 hierarchy nonetheless holds
// controllers.
func hybridControllersOnV2() bool {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		return false
	}
	data, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	return err == nil && len(strings.TrimSpace(string(data))) > 0
}

func mountV2ControllersAsV1() error {
	data, err := os.ReadFile("/sys/fs/cgroup/unified/cgroup.controllers")
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range strings.Fields(string(data)) {
		dir := filepath.Join("/sys/fs/cgroup", c)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount("cgroup", dir, "cgroup", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, c); err != nil {
			errs = append(errs, fmt.Errorf("mounting cgroup v1 %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}
