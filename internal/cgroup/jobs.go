package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Jobs is the cgroup tree /PARENT/jobs that holds the daemon's own jobs
// that fork (an image recipe's bash and its mmdebstrap, buildah and the
// runtime it runs each RUN step with), one cgroup per job below it.
//
// Why a cgroup: the daemon gives such a child a parent-death signal, but
// the kernel sends it to that child only; what the child forked (a RUN
// step's container, which buildah's runtime puts in a cgroup and a
// session of its own) outlived a SIGKILLed daemon for good. A cgroup
// keeps every descendant, however it daemonizes, and outlives the daemon
// itself, so the next start with the same --cgroup-parent kills what is
// left (Sweep). The tree is below the daemon's own --cgroup-parent, which
// no other daemon on the host may use (its host lock), so a start never
// kills another daemon's jobs.
type Jobs struct {
	host *Host
	path string
	seq  atomic.Uint64
}

// Jobs returns the jobs tree below the cgroup parent (one path element).
func (h *Host) Jobs(parent string) *Jobs {
	return &Jobs{host: h, path: "/" + parent + "/jobs"}
}

// Sweep kills every process left in the jobs tree, in every hierarchy,
// and removes the tree: run it at start, before any job, and at a stop.
func (j *Jobs) Sweep() error { return j.host.Group(j.path).Remove() }

// Job is one job's cgroup, /PARENT/jobs/N. The job's own processes start
// in N/run, a leaf (cgroup v2 lets a cgroup that hands controllers to its
// children hold no process itself); its containers go in or below
// N/steps (Parent). Apart, because the runtime that deletes a container
// kills every process in and below the container's cgroup: buildah's
// crun, given the parent itself, killed buildah when its first RUN step
// ended.
type Job struct {
	group *Group
	// dir is N/run's descriptor on the cgroup2 hierarchy; nil on a
	// v1-only host.
	dir *os.File
}

// Start makes the cgroup of a new job. A nil Jobs gives a nil Job, which
// keeps nothing (a store without a daemon, in unit tests).
func (j *Jobs) Start() (*Job, error) {
	if j == nil {
		return nil, nil
	}
	g := j.host.Group(j.path + "/" + strconv.FormatUint(j.seq.Add(1), 10))
	if j.host.cgroup2 == "" {
		return &Job{group: g}, nil
	}
	run := filepath.Join(j.host.cgroup2, g.Path, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		return nil, fmt.Errorf("creating the job cgroup %s: %w", run, err)
	}
	dir, err := os.OpenFile(run, unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		g.Remove()
		return nil, fmt.Errorf("opening the job cgroup %s: %w", run, err)
	}
	return &Job{group: g, dir: dir}, nil
}

// Attach makes cmd start in the job's cgroup: clone3 puts the child there
// before it runs a single instruction (CLONE_INTO_CGROUP), so nothing it
// forks is ever outside. A nil job, or a v1-only host, attaches nothing:
// there the job's containers (Parent) are still in the tree, but its
// first process and what it forks outside containers are not.
func (j *Job) Attach(cmd *exec.Cmd) {
	if j == nil || j.dir == nil {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(j.dir.Fd())
}

// Parent is the cgroup path the job's containers go in or below
// (buildah's --cgroup-parent): never an ancestor of the job's own
// processes. Empty for a nil job.
func (j *Job) Parent() string {
	if j == nil {
		return ""
	}
	return j.group.Path + "/steps"
}

// End kills whatever the job left running (a RUN step's container whose
// buildah was killed, say) and removes its cgroups.
func (j *Job) End() error {
	if j == nil {
		return nil
	}
	if j.dir != nil {
		j.dir.Close()
	}
	return j.group.Remove()
}
