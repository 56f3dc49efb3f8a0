package sandbox

import (
	"context"
	"fmt"

	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// Images resolves an image name to the layers a sandbox root is made of.
type Images interface {
	Resolve(ctx context.Context, name string) (*rootfs.Image, error)
}

// HostImages serves only the host image.
type HostImages struct{ Host *rootfs.Image }

// Resolve returns the host image for its name and ErrImageNotFound for any
// other.
func (h HostImages) Resolve(_ context.Context, name string) (*rootfs.Image, error) {
	if name == h.Host.Name {
		return h.Host, nil
	}
	return nil, fmt.Errorf("%w: %q (available: %q)", ErrImageNotFound, name, h.Host.Name)
}
