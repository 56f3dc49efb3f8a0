package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/rootfs"
	"github.com/sandboxd/sandboxd/internal/runtime"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// openImages opens the image store in <state>/images; buildah keeps its
// storage in <state>/build and its run root in <run>/build.
func openImages(cfg Config, host *rootfs.Image, rt *runtime.Runtime, jobs *cgroup.Jobs, inUse func(context.Context) (map[string]bool, error), log *slog.Logger) (*image.Store, error) {
	st, err := image.Open(image.Options{
		Dir:           filepath.Join(cfg.StateDir, "images"),
		Host:          host,
		InUse:         inUse,
		MaxImageBytes: cfg.MaxImageBytes,
		Keychain:      image.KeychainFromFile(cfg.RegistryAuth),
		BuildRoot:     filepath.Join(cfg.StateDir, "build"),
		RunRoot:       filepath.Join(cfg.RunDir, "build"),
		BuildRuntime:  rt.Path,
		Jobs:          jobs,
		CacheDir:      cfg.ImageCacheDir,
		Log:           log.With("component", "images"),
	})
	if err != nil {
		return nil, fmt.Errorf("opening the image store: %w", err)
	}
	return st, nil
}

// imagesInUse returns the config digests of every sandbox's image and
// every snapshot's (a fork boots from its snapshot's image).
func imagesInUse(ctx context.Context, mgr *sandbox.Manager) (map[string]bool, error) {
	if mgr == nil {
		return nil, errors.New("sandbox manager not ready")
	}
	infos, err := mgr.List(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, inf := range infos {
		if d := inf.Config.ImageDigest; d != "" {
			used[d] = true
		}
	}
	snaps, err := mgr.ListSnapshots(ctx)
	if err != nil {
		return nil, err
	}
	for _, snap := range snaps {
		if snap.ImageDigest != "" {
			used[snap.ImageDigest] = true
		}
	}
	return used, nil
}

// hostImageDir holds the host image's skeleton versions.
func hostImageDir(cfg Config) string { return filepath.Join(cfg.StateDir, "images", "hostfs") }

// collectHostImages removes host skeleton versions that no sandbox's
// overlay uses any more, once recovery has reattached the sandboxes that
// survived the restart (they keep theirs) and torn down the rest. Daemons
// before versioned skeletons kept one at images/host (and host.old,
// host.new while swapping); those go the same way.
func collectHostImages(cfg Config, current *rootfs.Image, log *slog.Logger) {
	images := filepath.Join(cfg.StateDir, "images")
	stale := []string{filepath.Join(images, "host"), filepath.Join(images, "host.old"), filepath.Join(images, "host.new")}
	removed, err := rootfs.CollectHost(hostImageDir(cfg), current, stale...)
	for _, dir := range removed {
		log.Info("unused host image version removed", "dir", dir)
	}
	if err != nil {
		log.Warn("collecting unused host image versions", "err", err)
	}
}

// collectImages runs the image store's garbage collection once the
// sandboxes are known, and checks the default image.
func collectImages(ctx context.Context, st *image.Store, cfg Config, log *slog.Logger) {
	if _, err := st.GC(ctx); err != nil {
		log.Warn("collecting unused images", "err", err)
	}
	if _, err := st.Resolve(ctx, cfg.DefaultImage); err != nil {
		log.Warn("the default image is not in the image store; sandboxes that do not choose one will fail until it is (sandbox image build-base, import or pull)",
			"image", cfg.DefaultImage, "err", err)
	}
}

// sandboxImages gives the sandbox manager the image store, in its terms.
type sandboxImages struct{ st *image.Store }

func (s sandboxImages) Resolve(ctx context.Context, name string) (*rootfs.Image, error) {
	img, err := s.st.Resolve(ctx, name)
	if errors.Is(err, image.ErrNotFound) {
		return nil, fmt.Errorf("%w: %q is not in the image store (sandbox image ls)", sandbox.ErrImageNotFound, name)
	}
	return img, err
}
