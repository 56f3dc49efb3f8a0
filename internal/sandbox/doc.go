// Package sandbox owns sandboxes: it creates one the first time an ID is
// named, starts it, finds it again after a daemon restart, hands out
// connections to its agent, and destroys it. Each sandbox is an OCI
// container (internal/runtime) on an overlay root (internal/rootfs) in its
// own network namespace (internal/network) and cgroup (internal/cgroup),
// recorded in the registry (internal/store).
//
// Lifecycle changes of one sandbox are serialised by a per-sandbox mutex;
// calls on different sandboxes never wait for each other. Every resource
// acquired while starting a sandbox pushes its undo onto a cleanup stack,
// so a failed start leaks nothing. This package never sees HTTP types.
package sandbox
