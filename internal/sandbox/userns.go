package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// User namespaces. Every crun sandbox created while they are on
// runs in a user namespace of its own: root inside is the first host UID
// of a range of rootfs.IDRangeSize IDs that belongs to that sandbox alone,
// so a process that escaped its other walls would be an unprivileged
// user of the host. Ranges are allocated from Options.UserNSBase upward,
// recorded in the sandbox's registry row (store.Sandbox.HostUIDBase) and
// freed with it. A sandbox keeps the mode it was created with: one made
// before user namespaces (or with them off) runs without, and says so in
// its info; one that has a range always runs in it.
//
// gVisor sandboxes get none: runsc already runs its Sentry and gofer in a
// user namespace of their own as an unprivileged host user, and the
// sandbox's root is gVisor's, not the host kernel's.

// DefaultUserNSBase is the first host UID of sandbox ranges by default:
// above the IDs a host hands out to its own users and to subordinate ID
// ranges (/etc/subuid starts at 100000 and grows by 65536 per user).
const DefaultUserNSBase = 1_000_000

// maxKeptUserNS bounds the user namespaces the manager keeps open ahead
// of need (see rootfs.UserNSCache).
const maxKeptUserNS = 4096

// hostIDs is b's host ID range, or nil when b has no user namespace.
func (b *box) hostIDs() *rootfs.IDRange {
	if b.rec.HostUIDBase == 0 || b.isGVisor() {
		return nil
	}
	return &rootfs.IDRange{Base: b.rec.HostUIDBase}
}

// allocateIDs picks for self the lowest range at or above the base that
// overlaps no other sandbox's (registered, being created, or in the warm
// pool), and marks it taken in self; 0 when self, to run on runtimeName,
// gets no user namespace.
func (m *Manager) allocateIDs(self *box, runtimeName string) (uint32, error) {
	if !m.opts.UserNS || runtimeName == RuntimeGVisor {
		return 0, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.lowestFreeIDs(self)
	if !ok {
		return 0, fmt.Errorf("%w: every host UID range from %d up is in use", ErrCapacity, m.userNSBase())
	}
	self.uidBase.Store(int64(c))
	return c, nil
}

func (m *Manager) userNSBase() uint64 {
	if m.opts.UserNSBase == 0 {
		return DefaultUserNSBase
	}
	return uint64(m.opts.UserNSBase)
}

// lowestFreeIDs is the lowest range at or above the base that overlaps
// no sandbox's but self's. m.mu must be held.
func (m *Manager) lowestFreeIDs(self *box) (uint32, bool) {
	used := make([]uint32, 0, len(m.boxes)+4)
	for _, b := range m.boxes {
		if b != self {
			if n := b.uidBase.Load(); n > 0 {
				used = append(used, uint32(n))
			}
		}
	}
	_, forkUIDs := m.forkHeld()
	used = append(append(used, m.pool.uidBases()...), forkUIDs...)
	return lowestFree(m.userNSBase(), used)
}

// lowestFree is the lowest range start base + k*rootfs.IDRangeSize that
// overlaps none of the ranges starting at used (which it sorts). One pass
// over the sorted starts finds it: checking each candidate against every
// range, as this did before, held the manager's lock for millions of
// comparisons on every create at 2,000 sandboxes (O(N²)), and every call
// (an exec's lease, a list's page) waits for that lock.
func lowestFree(base uint64, used []uint32) (uint32, bool) {
	const size = rootfs.IDRangeSize
	slices.Sort(used)
	c := base
	for _, u := range used {
		start := uint64(u)
		if start+size <= c {
			continue // wholly below the candidate, and below every later one
		}
		if start >= c+size {
			break // neither this range nor any later one reaches c
		}
		// It overlaps: the next candidate that starts at or past its end.
		c += (start + size - c + size - 1) / size * size
	}
	if c+size > 1<<32-1 {
		return 0, false
	}
	return uint32(c), true
}

// prefetchIDs has the user namespace of the range the next sandbox would
// get opened in the background, after a start that used the range at
// base (0: none, and nothing to do), so that the next start of a new
// sandbox finds it ready. It waits refillDelay after the start, as the
// pool's refill does: opening one starts processes, and a new
// sandbox's first call follows its start at once.
func (m *Manager) prefetchIDs(base uint32) {
	if base == 0 {
		return
	}
	time.AfterFunc(refillDelay, func() {
		m.mu.Lock()
		next, ok := m.lowestFreeIDs(nil)
		m.mu.Unlock()
		if ok {
			m.userns.Prefetch(rootfs.IDRange{Base: next})
		}
	})
}

// prefetchAfterTeardown has a user namespace opened ahead, once b's
// container is gone, for the range started next (b's own is never handed
// out again: rootfs.UserNSCache): b's range, for its wake or restart; or,
// when b is being destroyed, the lowest free range, which the next new
// sandbox gets (many destroys in a row open one or a few).
func (m *Manager) prefetchAfterTeardown(b *box) {
	ids := b.hostIDs()
	if ids == nil {
		return
	}
	if b.state() == StatusDestroying {
		m.prefetchIDs(ids.Base)
		return
	}
	time.AfterFunc(refillDelay, func() { m.userns.Prefetch(*ids) })
}

// rootOwner is the host UID of the sandbox's root: ids's base, or -1
// (the host's root, left as it is) without a user namespace.
func rootOwner(ids *rootfs.IDRange) int {
	if ids == nil {
		return -1
	}
	return int(ids.Base)
}

// idmapMounts returns the image's mounts (the host's /usr) idmapped for
// ids by the runtime, so that the host's root-owned files are the
// sandbox's root's inside, as the image's layers are.
func idmapMounts(mounts []specs.Mount, ids *rootfs.IDRange) []specs.Mount {
	if ids == nil {
		return mounts
	}
	out := make([]specs.Mount, len(mounts))
	for i, mt := range mounts {
		mt.Options = append(append([]string{}, mt.Options...), "idmap")
		out[i] = mt
	}
	return out
}

// giveToRange makes the host files the sandbox's root must write
// (bind-mounted cgroup.procs files) belong to its range's root.
func giveToRange(mounts []specs.Mount, ids *rootfs.IDRange) error {
	if ids == nil {
		return nil
	}
	for _, mt := range mounts {
		if err := os.Lchown(mt.Source, int(ids.Base), int(ids.Base)); err != nil {
			return fmt.Errorf("giving %s to the sandbox's root: %w", filepath.Base(mt.Source), err)
		}
	}
	return nil
}

// rootPath is the root's path in the spec. With a user namespace, the
// runtime sets the root up as the sandbox's root, an unprivileged host
// user who may not search the state directory's ancestors (0700 here);
// a path relative to the bundle, the runtime's working directory, needs
// only the bundle and the sandbox's directory (letRangeReachRoot).
func rootPath(p paths, ids *rootfs.IDRange) string {
	if ids == nil {
		return p.rootfs
	}
	return filepath.Join("..", filepath.Base(p.rootfs))
}

// letRangeReachRoot lets the range's root, and no other host user,
// search the sandbox's directory and bundle (root:base, 0710): enough to
// reach the root from the bundle, not to list or read anything else.
func letRangeReachRoot(p paths, ids *rootfs.IDRange) error {
	if ids == nil {
		return nil
	}
	for _, d := range []string{p.dir, p.bundle} {
		if err := os.Lchown(d, 0, int(ids.Base)); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o710); err != nil {
			return err
		}
	}
	return nil
}

// removeSysfs unmounts the sysfs the daemon mounted for a sandbox in a
// user namespace and removes its mount point (never RemoveAll: that would
// walk a sysfs still mounted).
func removeSysfs(dir string) error {
	if err := rootfs.Unmount(dir); err != nil {
		return err
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
