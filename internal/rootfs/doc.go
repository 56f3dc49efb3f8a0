// Package rootfs builds what a sandbox's root filesystem is made of: the
// "host" image (a skeleton root whose /usr is the host's own, read-only, and
// whose /etc is synthesised) and the per-sandbox overlay that puts a
// writable upper directory on top of an image's read-only layers.
//
// It must never expose a host secret: nothing from the host's /etc is copied
// unless it is on an allowlist and world-readable, and no host directory
// other than the read-only system directories is ever mounted.
package rootfs
