package rootfs

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Image is what a sandbox's root is built from.
type Image struct {
	// Name is the image's name ("host" for the host image).
	Name string
	// Digest is the image's config digest ("sha256:..."); empty for the
	// host image.
	Digest string
	// Layers are read-only directories, lowest first, that make up the root.
	Layers []string
	// Mounts are extra read-only mounts the image needs (the host's /usr for
	// the host image).
	Mounts []specs.Mount
	// Env is the image's environment, the lowest-precedence part of every
	// sandbox process's environment ("KEY=value").
	Env []string
	// WorkingDir is where sessions start unless told otherwise.
	WorkingDir string
	// Cmd is the image's Entrypoint followed by its Cmd: what the image
	// runs as its main process, if anything.
	Cmd []string
	// User is the image's USER ("name", "name:group", "uid" ...).
	User string
}
