package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sandboxd/sandboxd/internal/hostlock"
)

// HostLockDir holds the host-wide locks of the names two daemons on one
// host must not share.
const HostLockDir = hostlock.Dir

// hostLocks makes sure no other running sandboxd uses this daemon's state
// directory, run directory, cgroup parent, interface prefix or nftables
// table. Two daemons that shared one of them would take each other's
// sandboxes for orphans and collect them (the run directory holds the
// runtime's containers, the cgroup parent every sandbox's cgroup), or
// each flush the other's firewall rules. Each is an exclusive flock held
// for the daemon's life; a refusal names the PID that holds it. The
// returned release removes the lock files, and the files in lockDir that
// daemons killed before they could left are removed first (package
// hostlock says why both are safe).
func hostLocks(cfg Config, lockDir string) (func(), error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", lockDir, err)
	}
	hostlock.RemoveStaleIn(lockDir, "*.lock")
	locks := []struct{ path, what string }{
		{filepath.Join(cfg.StateDir, "sandboxd.lock"), "state directory " + cfg.StateDir},
		{filepath.Join(cfg.RunDir, "sandboxd.lock"), "run directory " + cfg.RunDir},
		{hostlock.Path(lockDir, "cgroup", cfg.CgroupParent), "cgroup parent " + cfg.CgroupParent + " (--cgroup-parent)"},
		{hostlock.Path(lockDir, "iface", cfg.IfacePrefix), "interface prefix " + cfg.IfacePrefix + " (--iface-prefix)"},
		{hostlock.Path(lockDir, "nft", cfg.NetTable), "nftables table " + cfg.NetTable + " (--nft-table)"},
	}
	var held []*hostlock.Lock
	release := func() {
		for _, l := range held {
			l.Release()
		}
	}
	for _, l := range locks {
		lock, err := hostlock.Acquire(l.path)
		if errors.Is(err, hostlock.ErrHeld) {
			release()
			return nil, fmt.Errorf("the %s is in use by another running sandboxd%s; give each daemon on a host its own", l.what, holder(l.path))
		}
		if err != nil {
			release()
			return nil, fmt.Errorf("locking the %s: %w", l.what, err)
		}
		held = append(held, lock)
	}
	if other := overlappingPrefix(lockDir, cfg.IfacePrefix); other != "" {
		release()
		return nil, fmt.Errorf("the interface prefix %s (--iface-prefix) overlaps %s, which another running sandboxd uses%s: "+
			"each daemon's firewall rules take every interface its prefix starts; give each daemon a prefix that starts no other",
			cfg.IfacePrefix, other, holder(hostlock.Path(lockDir, "iface", other)))
	}
	return release, nil
}

// overlappingPrefix returns a held interface prefix other than prefix
// that starts it or that it starts ("sb" and "sbx"), or "".
func overlappingPrefix(lockDir, prefix string) string {
	entries, _ := os.ReadDir(lockDir)
	for _, e := range entries {
		name, isIface := strings.CutPrefix(e.Name(), "iface-")
		other, isLock := strings.CutSuffix(name, ".lock")
		if !isIface || !isLock || other == prefix {
			continue
		}
		if (strings.HasPrefix(other, prefix) || strings.HasPrefix(prefix, other)) && hostlock.Held(filepath.Join(lockDir, e.Name())) {
			return other
		}
	}
	return ""
}

func holder(path string) string {
	if pid := hostlock.Holder(path); pid != "" {
		return " (pid " + pid + ")"
	}
	return ""
}
