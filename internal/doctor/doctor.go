// Package doctor checks whether a host can run sandboxd: the kernel features
// it relies on (cgroups, overlayfs, user namespaces and idmapped mounts,
// nftables, IP forwarding, FUSE), the OCI runtimes, the room left in the
// state directory, and firewalls that would drop sandboxes' traffic. Each
// check says ok, missing or warn, and how to fix what is not ok.
//
// `sandboxd doctor` prints the report; the daemon runs the same checks at
// start and logs one line per problem. A check only looks: it never loads a
// module, changes a sysctl, or mounts anything that outlives it.
package doctor

import (
	"context"
	"log/slog"
	"time"
)

// Status is a check's outcome.
type Status string

const (
	// OK: present and usable.
	OK Status = "ok"
	// Missing: absent; Fix says how to get it.
	Missing Status = "missing"
	// Warn: present, but something about it will cause trouble.
	Warn Status = "warn"
)

// Check is one item of the report.
type Check struct {
	// Name is stable: tools match on it (cgroup, overlayfs, userns,
	// idmapped-mounts, nftables, ip-forward, fuse, oci-runtime, crun, runc,
	// gvisor, disk, inodes, forward-firewall, chromium).
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix says what to do when Status is not ok.
	Fix string `json:"fix,omitempty"`
	// Required checks that are not ok stop sandboxes from working; the
	// others lose one feature (gVisor, FUSE mounts) or only matter for
	// development.
	Required bool `json:"required"`
}

// Report is the result of Run.
type Report struct {
	// OK is false when a required check is missing (a warning alone does
	// not make it false).
	OK     bool    `json:"ok"`
	Checks []Check `json:"checks"`
}

// Options say what to check.
type Options struct {
	// StateDir is where disk space and inodes are measured, and where
	// idmapped mounts are tried (its nearest existing parent if it does not
	// exist yet).
	StateDir string
	// NetTable is sandboxd's own nftables table, whose forward chain is not
	// a conflicting firewall.
	NetTable string
	// UserNSBase is the first host UID of the sandboxes' ID ranges
	// (--userns-base; 0: the default), whose root the user namespace
	// checks make a namespace as.
	UserNSBase uint32
	// First are checks made by the caller (the command line's config
	// check), reported before the others.
	First []Check
	// Dev adds the checks that matter only for development (Chromium for
	// the console's tests).
	Dev bool
}

// checkTimeout bounds each check that runs a program.
const checkTimeout = 10 * time.Second

// Run runs every check in a fixed order.
func Run(ctx context.Context, o Options) Report {
	checks := append([]Check(nil), o.First...)
	ns, base, nsErr := userNS(o.UserNSBase)
	checks = append(checks, checkCgroup(), checkOverlay(), checkUserns(ns, nsErr, base), checkIdmap(ns, nsErr, o.StateDir))
	if nsErr == nil {
		ns.Close()
	}
	checks = append(checks, checkNftables(ctx), checkIPForward(), checkFUSE())
	checks = append(checks, checkRuntimes(ctx)...)
	checks = append(checks, checkDisk(o.StateDir)...)
	checks = append(checks, checkForwardFirewall(ctx, o.NetTable))
	if o.Dev {
		checks = append(checks, checkChromium())
	}
	r := Report{OK: true, Checks: checks}
	for _, c := range checks {
		if c.Required && c.Status == Missing {
			r.OK = false
		}
	}
	return r
}

// LogProblems logs one line per check that is not ok: a warning for an
// optional item, an error for a required one.
func LogProblems(log *slog.Logger, r Report) {
	for _, c := range r.Checks {
		if c.Status == OK {
			continue
		}
		level := slog.LevelWarn
		if c.Required {
			level = slog.LevelError
		}
		log.Log(context.Background(), level, "host check: "+c.Name+" "+string(c.Status),
			"check", c.Name, "status", c.Status, "detail", c.Detail, "fix", c.Fix)
	}
}
