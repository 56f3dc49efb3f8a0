package image

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/images/base"
	"github.com/sandboxd/sandboxd/internal/osthread"
)

// BaseEnv is the environment of the base image. pip may install into the
// system Python (a sandbox is disposable: PEP 668's guard protects hosts),
// and matplotlib draws without a display.
var BaseEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C.UTF-8",
	"PIP_BREAK_SYSTEM_PACKAGES=1",
	"PIP_ROOT_USER_ACTION=ignore",
	"MPLBACKEND=Agg",
}

// baseCreated is the base image's creation time: the recipe's
// SOURCE_DATE_EPOCH, so that the same tarball gives the same image ID.
var baseCreated = time.Unix(1704067200, 0).UTC()

// BaseOptions describe a base image build.
type BaseOptions struct {
	// Rebuild ignores a cached build of the same recipe.
	Rebuild bool
	// Mirror is the Debian mirror; empty: the recipe's default.
	Mirror string
	// Log receives the build's output, line by line.
	Log LogFunc
}

// BuildBase builds the base image from the recipe in images/base (with
// mmdebstrap, from Debian's packages) and stores it as "base". The
// recipe's output is cached in Options.CacheDir, keyed by the recipe's
// hash, so it is built once per machine; a later call (or another state
// directory) only imports it.
func (s *Store) BuildBase(ctx context.Context, opts BaseOptions) (Image, error) {
	if opts.Log == nil {
		opts.Log = func(string, string) {}
	}
	s.baseMu.Lock()
	defer s.baseMu.Unlock()
	hash := base.Hash()
	cached := ""
	if s.opts.CacheDir != "" {
		cached = filepath.Join(s.opts.CacheDir, "base-"+hash[:16]+".tar")
	}
	tarball := cached
	if cached == "" || opts.Rebuild || !exists(cached) {
		tmp, err := s.tmpDir("base-")
		if err != nil {
			return Image{}, err
		}
		defer os.RemoveAll(tmp)
		out := filepath.Join(tmp, "rootfs.tar")
		if err := s.runRecipe(ctx, tmp, out, opts); err != nil {
			return Image{}, err
		}
		tarball = out
		if cached != "" {
			if err := saveCache(out, cached); err != nil {
				s.log.Warn("caching the base image tarball", "path", cached, "err", err)
			} else {
				tarball = cached
			}
		}
	} else {
		opts.Log("stdout", "using the cached build of this recipe: "+cached)
	}
	opts.Log("stdout", "importing the base image")
	img, err := s.ImportRootfs(ctx, tarball, BaseName, RootfsConfig{
		Env: BaseEnv, WorkingDir: "/workspace", Created: baseCreated, Kind: "base",
		Labels: map[string]string{"dev.sandboxd.recipe": hash},
	})
	if err != nil {
		return Image{}, err
	}
	opts.Log("stdout", fmt.Sprintf("base image %s: %d bytes unpacked, %d bytes compressed", short(img.Digest), img.Size, img.BlobSize))
	return img, nil
}

func (s *Store) runRecipe(ctx context.Context, tmp, out string, opts BaseOptions) error {
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		return fmt.Errorf("%w: mmdebstrap is not installed (apt-get install mmdebstrap)", ErrBuilderMissing)
	}
	recipe := filepath.Join(tmp, "recipe")
	if err := os.CopyFS(recipe, base.Files()); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(recipe, "build.sh"), out)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	if opts.Mirror != "" {
		cmd.Env = append(cmd.Env, "MIRROR="+opts.Mirror)
	}
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	// The parent-death signal reaches bash only; its cgroup holds
	// mmdebstrap and what that forks.
	job, err := s.opts.Jobs.Start()
	if err != nil {
		return err
	}
	defer job.End()
	job.Attach(cmd)
	tail := &tailBuffer{max: 2048}
	var mu sync.Mutex
	emit := func(stream string) *lineBuf {
		return lineWriter(func(line string) {
			mu.Lock()
			defer mu.Unlock()
			tail.add(line)
			opts.Log(stream, line)
		}).(*lineBuf)
	}
	stdout, stderr := emit("stdout"), emit("stderr")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	s.log.Info("building the base image", "recipe", base.Hash()[:16])
	start := time.Now()
	// Hold: the parent-death signal comes when the forking thread ends.
	err = osthread.Hold(cmd.Run)
	stdout.flush()
	stderr.flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: the base image recipe failed: %v: %s", ErrBuildFailed, err, tail.String())
	}
	s.log.Info("base image recipe done", "took", time.Since(start))
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// saveCache moves (or, across file systems, copies) the built tarball to
// the cache.
func saveCache(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// RootfsConfig is the config given to an image made from a root file
// system tarball.
type RootfsConfig struct {
	Env        []string
	WorkingDir string
	Cmd        []string
	Labels     map[string]string
	Created    time.Time
	// Kind goes to Image.Source; default "rootfs".
	Kind string
}

// ImportRootfs makes a one-layer image of the root file system tarball at
// path (an uncompressed tar) with config cfg and stores it under name.
func (s *Store) ImportRootfs(ctx context.Context, path, name string, cfg RootfsConfig) (Image, error) {
	if err := ValidateName(name); err != nil {
		return Image{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	// The config names the layer's digest: one pass to compute it.
	diffID, err := tarDigest(f)
	if err != nil {
		return Image{}, err
	}
	if cfg.Kind == "" {
		cfg.Kind = "rootfs"
	}
	cf := v1.ConfigFile{
		Architecture: goruntime.GOARCH, OS: "linux", Created: v1.Time{Time: cfg.Created},
		Config: v1.Config{Env: cfg.Env, WorkingDir: cfg.WorkingDir, Cmd: cfg.Cmd, Labels: cfg.Labels},
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{diffID}},
	}
	raw, err := json.Marshal(cf)
	if err != nil {
		return Image{}, err
	}
	src := &source{kind: cfg.Kind, rawConfig: raw, layers: []layerSource{{
		size: -1, mediaType: types.OCIUncompressedLayer,
		open: func(context.Context) (io.ReadCloser, error) { return os.Open(path) },
	}}}
	r, err := s.ingest(ctx, src)
	if err != nil {
		return Image{}, err
	}
	if err := s.tag(name, r.Digest); err != nil {
		return Image{}, err
	}
	s.log.Info("image imported", "name", name, "digest", r.Digest, "source", r.Source)
	return s.Inspect(ctx, name)
}

// tarDigest returns the digest of the (uncompressed) tar in f, and
// rewinds it.
func tarDigest(f *os.File) (v1.Hash, error) {
	h, _, err := v1.SHA256(f)
	if err != nil {
		return v1.Hash{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return v1.Hash{}, err
	}
	return h, nil
}
