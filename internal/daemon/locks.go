package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HostLockDir holds the host-wide locks of the names two daemons on one
// host must not share. It is on /run, so a reboot clears it (flocks end
// with their process anyway).
const HostLockDir = "/run/lock/sandboxd"

// hostLocks makes sure no other running sandboxd uses this daemon's state
// directory, run directory, cgroup parent, interface prefix or nftables
// table. Two daemons that shared one of them would take each other's
// sandboxes for orphans and collect them (the run directory holds the
// runtime's containers, the cgroup parent every sandbox's cgroup), or
// each flush the other's firewall rules. Each is an exclusive flock held
// for the daemon's life; a refusal names the PID that holds it.
func hostLocks(cfg Config, lockDir string) (func(), error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", lockDir, err)
	}
	locks := []struct{ path, what string }{
		{filepath.Join(cfg.StateDir, "sandboxd.lock"), "state directory " + cfg.StateDir},
		{filepath.Join(cfg.RunDir, "sandboxd.lock"), "run directory " + cfg.RunDir},
		{filepath.Join(lockDir, "cgroup-"+cfg.CgroupParent+".lock"), "cgroup parent " + cfg.CgroupParent + " (--cgroup-parent)"},
		{filepath.Join(lockDir, "iface-"+cfg.IfacePrefix+".lock"), "interface prefix " + cfg.IfacePrefix + " (--iface-prefix)"},
		{filepath.Join(lockDir, "nft-"+cfg.NetTable+".lock"), "nftables table " + cfg.NetTable + " (--nft-table)"},
	}
	var held []*os.File
	release := func() {
		for _, f := range held {
			f.Close()
		}
	}
	for _, l := range locks {
		f, err := lockFile(l.path)
		if err != nil {
			release()
			return nil, fmt.Errorf("the %s is in use by another running sandboxd%s; give each daemon on a host its own", l.what, holder(l.path))
		}
		held = append(held, f)
	}
	return release, nil
}

// lockFile takes an exclusive flock on path and writes this process's PID
// into it, for the message another daemon gives when refused.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	if err := errors.Join(f.Truncate(0), writeAt0(f, strconv.Itoa(os.Getpid())+"\n")); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func writeAt0(f *os.File, s string) error {
	_, err := f.WriteAt([]byte(s), 0)
	return err
}

func holder(path string) string {
	data, err := os.ReadFile(path)
	if pid := strings.TrimSpace(string(data)); err == nil && pid != "" {
		return " (pid " + pid + ")"
	}
	return ""
}
