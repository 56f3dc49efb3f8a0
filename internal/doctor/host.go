package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/bytesize"
)

// checkNftables runs `nft list tables`, which needs both the nft program and
// the kernel's nf_tables.
func checkNftables(ctx context.Context) Check {
	c := Check{Name: "nftables", Required: true}
	out, err := runTool(ctx, "nft", "list", "tables")
	if err != nil {
		c.Status, c.Detail = Missing, err.Error()
		c.Fix = "apt-get install nftables (and a kernel with nf_tables)"
		return c
	}
	c.Status, c.Detail = OK, fmt.Sprintf("nft works (%d tables)", strings.Count(out, "table "))
	return c
}

// checkRuntimes reports each OCI runtime and whether at least one of crun and
// runc is there.
func checkRuntimes(ctx context.Context) []Check {
	crun := checkTool(ctx, "crun", "apt-get install crun")
	runc := checkTool(ctx, "runc", "apt-get install runc")
	gvisor := checkTool(ctx, "runsc", "scripts/deps.sh builds runsc; see docs/operations.md")
	gvisor.Name = "gvisor"
	oci := Check{Name: "oci-runtime", Required: true}
	switch {
	case crun.Status == OK:
		oci.Status, oci.Detail = OK, "crun (preferred)"
	case runc.Status == OK:
		oci.Status, oci.Detail = OK, "runc (crun starts containers faster: apt-get install crun)"
	default:
		oci.Status, oci.Detail = Missing, "neither crun nor runc is installed"
		oci.Fix = "apt-get install crun runc"
	}
	return []Check{oci, crun, runc, gvisor}
}

// checkTool finds name on PATH and reports the first line of its --version.
func checkTool(ctx context.Context, name, fix string) Check {
	c := Check{Name: name}
	out, err := runTool(ctx, name, "--version")
	if err != nil {
		c.Status, c.Detail, c.Fix = Missing, err.Error(), fix
		return c
	}
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	c.Status, c.Detail = OK, line
	return c
}

// runTool runs a program found on PATH, bounded in time, and returns its
// standard output; the error names the program and what went wrong.
func runTool(ctx context.Context, name string, args ...string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found on PATH", name)
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return "", fmt.Errorf("%s %s: %v %s", name, strings.Join(args, " "), err, msg)
	}
	return string(out), nil
}

// Disk room below which the check warns, and below which it says the state
// directory is out of room.
const (
	warnFreeBytes   = 5 << 30
	failFreeBytes   = 1 << 30
	warnFreeInodes  = 100_000
	failFreeInodes  = 10_000
	warnFreePercent = 10
)

// checkDisk measures free space and free inodes on the state directory's
// filesystem (every sandbox's disk and upper layer live there).
func checkDisk(stateDir string) []Check {
	dir := existingParent(stateDir)
	space := Check{Name: "disk", Required: true}
	inodes := Check{Name: "inodes", Required: true}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		space.Status, space.Detail = Missing, fmt.Sprintf("statfs %s: %v", dir, err)
		inodes.Status, inodes.Detail = Missing, space.Detail
		return []Check{space, inodes}
	}
	free := int64(st.Bavail) * st.Bsize
	total := int64(st.Blocks) * st.Bsize
	space.Detail = fmt.Sprintf("%s free of %s on %s (%s)", bytesize.Format(free), bytesize.Format(total), dir, fsName(dir))
	space.Status = room(free, total, failFreeBytes, warnFreeBytes)
	if space.Status != OK {
		space.Fix = "free space on that filesystem, remove unused sandboxes and images, or move --state-dir"
	}
	inodes.Detail = fmt.Sprintf("%d inodes free of %d on %s", st.Ffree, st.Files, dir)
	// Filesystems with dynamic inodes (btrfs) report 0 total.
	if st.Files == 0 {
		inodes.Status, inodes.Detail = OK, "inodes are allocated dynamically on "+dir
		return []Check{space, inodes}
	}
	inodes.Status = room(int64(st.Ffree), int64(st.Files), failFreeInodes, warnFreeInodes)
	if inodes.Status != OK {
		inodes.Fix = "remove unused sandboxes and images, or move --state-dir to a filesystem with more inodes"
	}
	return []Check{space, inodes}
}

// room grades how much of a resource is left.
func room(free, total, fail, warn int64) Status {
	switch {
	case free < fail:
		return Missing
	case free < warn || (total > 0 && free*100/total < warnFreePercent):
		return Warn
	}
	return OK
}

// checkForwardFirewall looks for a forward chain whose policy drops packets in
// a table that is not sandboxd's, such as the one Docker installs
// (`iptables -P FORWARD DROP`). nftables runs every base chain on a hook: an
// accept in sandboxd's table does not overrule another table's drop, so
// internet-mode sandboxes would reach nothing.
func checkForwardFirewall(ctx context.Context, ownTable string) Check {
	c := Check{Name: "forward-firewall", Required: false}
	var found []string
	if out, err := runTool(ctx, "nft", "-j", "list", "chains"); err == nil {
		found = append(found, dropForwardChains(out, ownTable)...)
	}
	if legacyDrop(ctx) {
		found = append(found, "iptables-legacy filter FORWARD")
	}
	if len(found) == 0 {
		c.Status, c.Detail = OK, "no other forward chain drops by default"
		return c
	}
	c.Status = Warn
	c.Detail = "forward chains with policy drop: " + strings.Join(found, ", ") + "; internet-mode sandboxes' traffic is dropped there"
	c.Fix = "accept traffic from and to sandboxd's subnet in that chain (e.g. iptables -I DOCKER-USER -s 10.203.0.0/16 -j ACCEPT and -d 10.203.0.0/16 -j ACCEPT), or set its policy to accept"
	return c
}

// dropForwardChains parses `nft -j list chains` and names the base chains on
// the forward hook with policy drop outside ownTable.
func dropForwardChains(out, ownTable string) []string {
	var doc struct {
		Nftables []struct {
			Chain *struct {
				Family string `json:"family"`
				Table  string `json:"table"`
				Name   string `json:"name"`
				Hook   string `json:"hook"`
				Policy string `json:"policy"`
			} `json:"chain"`
		} `json:"nftables"`
	}
	if json.Unmarshal([]byte(out), &doc) != nil {
		return nil
	}
	var found []string
	for _, item := range doc.Nftables {
		ch := item.Chain
		if ch == nil || ch.Hook != "forward" || ch.Policy != "drop" || ch.Table == ownTable {
			continue
		}
		found = append(found, fmt.Sprintf("%s %s %s", ch.Family, ch.Table, ch.Name))
	}
	return found
}

// legacyDrop says whether the legacy iptables filter table (in use only when
// its kernel table exists; reading it otherwise would load modules) drops
// forwarded packets by default.
func legacyDrop(ctx context.Context) bool {
	names, err := os.ReadFile("/proc/net/ip_tables_names")
	if err != nil || !strings.Contains(string(names), "filter") {
		return false
	}
	out, err := runTool(ctx, "iptables-legacy", "-S", "FORWARD")
	return err == nil && strings.Contains(out, "-P FORWARD DROP")
}

// checkChromium looks for the browser the console's tests drive (development
// only: the daemon does not need it).
func checkChromium() Check {
	c := Check{Name: "chromium", Required: false}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			c.Status, c.Detail = OK, path+" (for the console's tests)"
			return c
		}
	}
	c.Status, c.Detail = Missing, "no chromium on PATH: the console's browser tests skip"
	c.Fix = "scripts/deps.sh (apt-get install chromium)"
	return c
}
