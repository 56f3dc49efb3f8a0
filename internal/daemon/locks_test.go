package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHostLocksLeaveNoFiles: a daemon's lock files go when it lets go of
// its locks, and the ones daemons killed before they could left are
// removed by the next daemon; a held one stays, and refuses its name.
func TestHostLocksLeaveNoFiles(t *testing.T) {
	lockDir := t.TempDir()
	cfg := Config{StateDir: t.TempDir(), RunDir: t.TempDir(), CgroupParent: "sbdlocks", IfacePrefix: "qlk", NetTable: "sbdlocks"}
	// A killed daemon's file: it exists, no one holds its lock.
	dead := filepath.Join(lockDir, "nft-killed.lock")
	if err := os.WriteFile(dead, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	release, err := hostLocks(cfg, lockDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); err == nil {
		t.Error("a killed daemon's lock file is still there")
	}
	other := cfg
	other.StateDir, other.RunDir, other.NetTable = t.TempDir(), t.TempDir(), "sbdother"
	if _, err := hostLocks(other, lockDir); err == nil || !strings.Contains(err.Error(), "cgroup parent sbdlocks") ||
		!strings.Contains(err.Error(), "(pid ") {
		t.Errorf("a second daemon with the same cgroup parent: %v", err)
	}
	if got := files(t, lockDir); strings.Join(got, " ") != "cgroup-sbdlocks.lock iface-qlk.lock nft-sbdlocks.lock" {
		t.Errorf("lock files while held: %q", got)
	}
	release()
	for _, dir := range []string{lockDir, cfg.StateDir, cfg.RunDir} {
		if got := files(t, dir); len(got) != 0 {
			t.Errorf("%s after the release: %q", dir, got)
		}
	}
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestOverlappingInterfacePrefixIsRefused: a daemon whose interface
// prefix starts, or is started by, one another running daemon holds
// refuses to start: its firewall rules would take the other's interfaces.
func TestOverlappingInterfacePrefixIsRefused(t *testing.T) {
	lockDir := t.TempDir()
	cfg := func(prefix string) Config {
		return Config{StateDir: t.TempDir(), RunDir: t.TempDir(), CgroupParent: "p" + prefix, IfacePrefix: prefix, NetTable: "t" + prefix}
	}
	release, err := hostLocks(cfg("sb"), lockDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"sbx", "s"} {
		if _, err := hostLocks(cfg(p), lockDir); err == nil || !strings.Contains(err.Error(), "overlaps sb,") {
			t.Errorf("prefix %s beside a running sb: %v", p, err)
		}
	}
	other, err := hostLocks(cfg("sc"), lockDir)
	if err != nil {
		t.Errorf("prefix sc beside a running sb: %v", err)
	} else {
		other()
	}
	release()
	if again, err := hostLocks(cfg("sbx"), lockDir); err != nil {
		t.Errorf("prefix sbx once sb stopped: %v", err)
	} else {
		again()
	}
	if got := files(t, lockDir); len(got) != 0 {
		t.Errorf("lock files left: %q", got)
	}
}
