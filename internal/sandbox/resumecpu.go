package sandbox

// A restore with every CPU of the host.
//
// `runsc restore` is CPU work: it copies the checkpoint's pages into the
// sandbox's memory (page faults and copies in the host kernel) and
// decodes its kernel's state, in the sandbox's processes, so within the
// sandbox's CPU limit: one CPU by default, while the host's others may be
// idle. So while a paused sandbox is restored into its container created
// ahead, its cgroup has its parent's CPUs and no quota, and its own limit
// applies again once its agent answers (or the resume fails): the restore
// loads pages (runsc restore --background) on one CPU while the kernel
// loads on another. A daemon killed meanwhile tears the container and its
// cgroup down on its next start (a paused sandbox resumes from nothing),
// so the wider limit cannot outlive a crash either.

// cpuWidener is a Cgroup that can lift its CPU limit for a while
// (cgroup.Group.WidenCPU).
type cpuWidener interface {
	WidenCPU() (restore func() error, err error)
}

// widenCPU lifts b's CPU limit and returns what puts it back; a failure
// only logs (the restore runs within the limit).
func (m *Manager) widenCPU(b *box) (restore func()) {
	w, ok := m.opts.Cgroups.Group(m.cgroupPath(b.rec.Key)).(cpuWidener)
	if !ok {
		return func() {}
	}
	undo, err := w.WidenCPU()
	if err != nil {
		m.log.Warn("widening a restoring sandbox's CPU limit", "sandbox", b.id, "err", err)
		return func() {}
	}
	return func() {
		if err := undo(); err != nil {
			m.log.Error("putting a restored sandbox's CPU limit back", "sandbox", b.id, "err", err)
		}
	}
}
