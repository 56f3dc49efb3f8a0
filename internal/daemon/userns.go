package daemon

import (
	"log/slog"
	"path/filepath"

	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// probeUserNS reports whether new sandboxes get user namespaces: when
// asked to (--userns), when the runtime is crun, and when this kernel can make a user namespace and
// an idmapped overlay lower layer on the state directory's filesystem.
// When it cannot, one log line says why and sandboxes run without.
func probeUserNS(cfg Config, runtimeName string, log *slog.Logger) bool {
	if !cfg.UserNS {
		log.Info("user namespaces are off (--userns=false): new sandboxes' root is the host's root, behind capabilities and seccomp")
		return false
	}
	if runtimeName != "crun" {
		// The root is given relative to the bundle (see the sandbox
		// package's rootPath), which crun resolves from there and runc
		// does not; runc with user namespaces is untested.
		log.Warn("user namespaces unavailable: they need crun, and the OCI runtime is " + runtimeName + "; new sandboxes run without")
		return false
	}
	err := rootfs.ProbeIDMap(filepath.Join(cfg.StateDir, "probe"), rootfs.IDRange{Base: uint32(cfg.UserNSBase)})
	if err != nil {
		log.Warn("user namespaces unavailable on this host; new sandboxes run without them", "err", err)
		return false
	}
	log.Info("sandboxes run in user namespaces of their own", "first_host_uid", cfg.UserNSBase)
	return true
}
