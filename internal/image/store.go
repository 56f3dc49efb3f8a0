package image

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/sandboxd/sandboxd/internal/atomicfile"
	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// Defaults of Options.
const (
	DefaultMaxImageBytes = 32 << 30
	DefaultMaxLayers     = 127
	defaultMaxEntries    = 2 << 20
	// pinFor is how long an image stays safe from garbage collection after
	// a sandbox resolved it: the sandbox's row, which marks the image as
	// used, is written just after (milliseconds later; the margin is for
	// a loaded host).
	pinFor = 5 * time.Second
)

// Options configure a Store.
type Options struct {
	// Dir is the store's directory, e.g. <state>/images.
	Dir string
	// Host is the built-in host image; nil means there is none.
	Host *rootfs.Image
	// InUse returns the config digests of the images sandboxes use. Images
	// it names are never removed. Required.
	InUse func(ctx context.Context) (map[string]bool, error)
	// MaxImageBytes bounds an image's unpacked size (and an upload's size).
	// Default DefaultMaxImageBytes.
	MaxImageBytes int64
	// MaxLayers bounds an image's layer count. Default DefaultMaxLayers.
	MaxLayers int
	// Keychain gives registry credentials; default: the docker config of
	// the daemon's user ($DOCKER_CONFIG or ~/.docker/config.json).
	Keychain authn.Keychain
	// BuildRoot is where builds keep their state (buildah's storage); it
	// must be outside Dir's layers. Default <Dir>/../build.
	BuildRoot string
	// RunRoot is buildah's run root (on a tmpfs). Default <BuildRoot>/run.
	RunRoot string
	// BuildRuntime is the OCI runtime binary buildah runs RUN steps with;
	// empty: buildah's default.
	BuildRuntime string
	// Jobs holds the processes of builds and base image recipes, each in
	// a cgroup of its own, so that nothing they fork outlives them or a
	// SIGKILLed daemon; nil: they run in the daemon's cgroup.
	Jobs *cgroup.Jobs
	// CacheDir keeps base image tarballs between daemon state dirs; empty
	// means no cache.
	CacheDir string
	Log      *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Store is the image store. It is safe for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger
	dir  string

	// gcMu is held for reading by anything that adds layers or records
	// (imports, pulls, builds) and for writing by garbage collection, so
	// a collection never sees a half-imported image as garbage.
	gcMu sync.RWMutex

	// mu guards names.json, the records directory and pins.
	mu     sync.Mutex
	pinned map[string]time.Time

	layerMu    sync.Mutex
	layerLocks map[string]*keyedLock

	// buildMu serialises builds: buildah's storage is shared.
	buildMu sync.Mutex
	// baseMu serialises base image builds.
	baseMu sync.Mutex
}

type keyedLock struct {
	mu   sync.Mutex
	refs int
}

// Open opens (creating if needed) the store in opts.Dir and removes what
// an interrupted import left behind.
func Open(opts Options) (*Store, error) {
	if opts.InUse == nil {
		return nil, errors.New("image: Options.InUse is required")
	}
	if opts.MaxImageBytes <= 0 {
		opts.MaxImageBytes = DefaultMaxImageBytes
	}
	if opts.MaxLayers <= 0 {
		opts.MaxLayers = DefaultMaxLayers
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BuildRoot == "" {
		opts.BuildRoot = filepath.Join(filepath.Dir(opts.Dir), "build")
	}
	if opts.RunRoot == "" {
		opts.RunRoot = filepath.Join(opts.BuildRoot, "run")
	}
	s := &Store{opts: opts, log: opts.Log, dir: opts.Dir, pinned: map[string]time.Time{}, layerLocks: map[string]*keyedLock{}}
	for _, d := range []string{"", "blobs/sha256", "layers", "l", "records", "tmp"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("creating image store: %w", err)
		}
	}
	// Layer directories must be traversable by sandbox users (their
	// contents keep the image's own modes).
	for _, d := range []string{"", "layers", "l"} {
		if err := os.Chmod(filepath.Join(s.dir, d), 0o711); err != nil {
			return nil, err
		}
	}
	if err := removeContents(filepath.Join(s.dir, "tmp")); err != nil {
		return nil, fmt.Errorf("clearing image staging area: %w", err)
	}
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) tmpDir(prefix string) (string, error) {
	return os.MkdirTemp(filepath.Join(s.dir, "tmp"), prefix)
}

// record is an image as stored in records/<hex>.json.
type record struct {
	Digest         string    `json:"digest"`
	ManifestDigest string    `json:"manifestDigest"`
	Created        time.Time `json:"created,omitzero"`
	ImportedAt     time.Time `json:"importedAt"`
	Source         string    `json:"source"`
	OS             string    `json:"os,omitempty"`
	Architecture   string    `json:"architecture,omitempty"`
	Config         Config    `json:"config"`
	Layers         []Layer   `json:"layers"`
}

func (r *record) image(names []string) Image {
	img := Image{
		Names: names, Digest: r.Digest, ManifestDigest: r.ManifestDigest, Created: r.Created,
		ImportedAt: r.ImportedAt, Source: r.Source, OS: r.OS, Architecture: r.Architecture,
		Config: r.Config, Layers: r.Layers,
	}
	for _, l := range r.Layers {
		img.Size += l.Size
		img.BlobSize += l.BlobSize
	}
	return img
}

func hexOf(digest string) string { return strings.TrimPrefix(digest, "sha256:") }

func (s *Store) recordPath(digest string) string {
	return filepath.Join(s.dir, "records", hexOf(digest)+".json")
}

func (s *Store) readRecord(digest string) (*record, error) {
	if !IsDigest(digest) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	data, err := os.ReadFile(s.recordPath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("reading image record %s: %w", digest, err)
	}
	return &r, nil
}

func (s *Store) writeRecord(r *record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.recordPath(r.Digest), data, 0o600)
}

// names reads names.json: name → config digest. Call with mu held.
func (s *Store) names() (map[string]string, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, "names.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f struct {
		Names map[string]string `json:"names"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("reading image names: %w", err)
	}
	if f.Names == nil {
		f.Names = map[string]string{}
	}
	return f.Names, nil
}

// setNames writes names.json. Call with mu held.
func (s *Store) setNames(names map[string]string) error {
	data, err := json.MarshalIndent(struct {
		Names map[string]string `json:"names"`
	}{names}, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.dir, "names.json"), data, 0o600)
}

// tag points name at digest, whose record must exist.
func (s *Store) tag(name, digest string) error {
	if err := validateKey(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.names()
	if err != nil {
		return err
	}
	old := names[name]
	names[name] = digest
	if err := s.setNames(names); err != nil {
		return err
	}
	if old != "" && old != digest {
		s.log.Info("image name re-pointed", "name", name, "from", old, "to", digest)
	}
	return nil
}

// lookup returns the digest name stands for: itself for a digest, the
// digest the name points at otherwise.
func (s *Store) lookup(name string) (string, error) {
	if IsDigest(name) {
		return name, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names, err := s.names()
	if err != nil {
		return "", err
	}
	d, ok := names[name]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return d, nil
}

// Resolve returns what a sandbox root is made of for the image name (or
// config digest): its layer directories lowest first, environment and
// working directory. The image is pinned against garbage collection for a
// while, so the sandbox that resolved it can record it.
func (s *Store) Resolve(ctx context.Context, name string) (*rootfs.Image, error) {
	if name == HostName {
		if s.opts.Host == nil {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		return s.opts.Host, nil
	}
	digest, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	r, err := s.readRecord(digest)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.pinned[digest] = s.opts.Now()
	s.mu.Unlock()
	img := &rootfs.Image{
		Name:       name,
		Digest:     r.Digest,
		Env:        slices.Clone(r.Config.Env),
		WorkingDir: r.Config.WorkingDir,
		Cmd:        append(slices.Clone(r.Config.Entrypoint), r.Config.Cmd...),
		User:       r.Config.User,
	}
	for _, l := range r.Layers {
		dir, err := s.layerDir(l.DiffID)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", name, err)
		}
		img.Layers = append(img.Layers, dir)
	}
	if len(img.Layers) == 0 {
		// overlayfs needs a lower directory: an image without layers is
		// an empty root.
		dir, err := s.emptyLayer()
		if err != nil {
			return nil, err
		}
		img.Layers = []string{dir}
	}
	return img, nil
}

// List returns every image: the host image first, then the others by
// first name (unnamed ones, kept for the sandboxes that use them, last).
func (s *Store) List(ctx context.Context) ([]Image, error) {
	s.mu.Lock()
	names, err := s.names()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	byDigest := map[string][]string{}
	for n, d := range names {
		byDigest[d] = append(byDigest[d], n)
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, "records"))
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, e := range entries {
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		r, err := s.readRecord("sha256:" + hex)
		if err != nil {
			s.log.Warn("skipping unreadable image record", "file", e.Name(), "err", err)
			continue
		}
		n := byDigest[r.Digest]
		sort.Strings(n)
		out = append(out, r.image(n))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Names, out[j].Names
		switch {
		case len(a) == 0 || len(b) == 0:
			return len(a) > len(b)
		}
		return a[0] < b[0]
	})
	if s.opts.Host != nil {
		out = append([]Image{s.hostImage()}, out...)
	}
	return out, nil
}

func (s *Store) hostImage() Image {
	h := s.opts.Host
	return Image{
		Names: []string{HostName}, Source: "host", OS: "linux",
		Config: Config{Env: h.Env, WorkingDir: h.WorkingDir},
	}
}

// Inspect returns the image name (or digest).
func (s *Store) Inspect(ctx context.Context, name string) (Image, error) {
	if name == HostName && s.opts.Host != nil {
		return s.hostImage(), nil
	}
	digest, err := s.lookup(name)
	if err != nil {
		return Image{}, err
	}
	r, err := s.readRecord(digest)
	if err != nil {
		return Image{}, err
	}
	s.mu.Lock()
	names, err := s.names()
	s.mu.Unlock()
	if err != nil {
		return Image{}, err
	}
	var n []string
	for k, d := range names {
		if d == digest {
			n = append(n, k)
		}
	}
	sort.Strings(n)
	return r.image(n), nil
}

// Remove removes the name (or, given a digest, the image and every name
// of it). It refuses, with ErrInUse, when the image would go while a
// sandbox uses it; an image that keeps another name stays. Layers nothing
// needs any more are collected.
func (s *Store) Remove(ctx context.Context, name string) error {
	if name == HostName {
		return fmt.Errorf("%w: the host image is built in and cannot be removed", ErrInvalidName)
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	s.mu.Lock()
	names, err := s.names()
	if err != nil {
		s.mu.Unlock()
		return err
	}
	digest := name
	if !IsDigest(name) {
		d, ok := names[name]
		if !ok {
			s.mu.Unlock()
			return fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		digest = d
	} else if _, err := os.Stat(s.recordPath(digest)); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, digest)
	}
	others := 0
	for n, d := range names {
		if d == digest && n != name {
			others++
		}
	}
	s.mu.Unlock()
	if others == 0 || IsDigest(name) {
		used, err := s.opts.InUse(ctx)
		if err != nil {
			return fmt.Errorf("finding the images sandboxes use: %w", err)
		}
		if used[digest] {
			return fmt.Errorf("%w: %s (%s) is the image of at least one sandbox; destroy those first", ErrInUse, name, short(digest))
		}
	}
	s.mu.Lock()
	names, err = s.names()
	if err == nil {
		for n, d := range names {
			if n == name || (IsDigest(name) && d == digest) {
				delete(names, n)
			}
		}
		err = s.setNames(names)
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.log.Info("image removed", "name", name, "digest", digest)
	_, err = s.collectLocked(ctx)
	return err
}

func short(digest string) string {
	h := hexOf(digest)
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// GCStats say what a collection removed.
type GCStats struct {
	Images, Layers, Blobs int
	// Bytes is an estimate: layer sizes plus blob sizes.
	Bytes int64
}

// GC removes images that have no name and no sandbox, then layers, short
// links and blobs that no image needs.
func (s *Store) GC(ctx context.Context) (GCStats, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	return s.collectLocked(ctx)
}

func (s *Store) collectLocked(ctx context.Context) (GCStats, error) {
	var st GCStats
	used, err := s.opts.InUse(ctx)
	if err != nil {
		return st, fmt.Errorf("finding the images sandboxes use: %w", err)
	}
	s.mu.Lock()
	names, err := s.names()
	now := s.opts.Now()
	for d, t := range s.pinned {
		if now.Sub(t) > pinFor {
			delete(s.pinned, d)
		}
	}
	pinned := map[string]bool{}
	for d := range s.pinned {
		pinned[d] = true
	}
	s.mu.Unlock()
	if err != nil {
		return st, err
	}
	named := map[string]bool{}
	for _, d := range names {
		named[d] = true
	}
	entries, err := os.ReadDir(filepath.Join(s.dir, "records"))
	if err != nil {
		return st, err
	}
	keepLayers := map[string]bool{}
	keepBlobs := map[string]bool{}
	for _, e := range entries {
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		digest := "sha256:" + hex
		r, err := s.readRecord(digest)
		if err != nil {
			return st, fmt.Errorf("reading %s (not collecting anything): %w", e.Name(), err)
		}
		if !named[digest] && !used[digest] && !pinned[digest] {
			if err := os.Remove(s.recordPath(digest)); err != nil {
				return st, err
			}
			st.Images++
			s.log.Info("image collected", "digest", digest)
			continue
		}
		keepBlobs[hexOf(r.Digest)] = true
		keepBlobs[hexOf(r.ManifestDigest)] = true
		for _, l := range r.Layers {
			keepLayers[hexOf(l.DiffID)] = true
			keepBlobs[hexOf(l.Blob)] = true
		}
	}
	layers, err := os.ReadDir(filepath.Join(s.dir, "layers"))
	if err != nil {
		return st, err
	}
	for _, e := range layers {
		if keepLayers[e.Name()] || e.Name() == emptyLayerName {
			continue
		}
		meta, _ := s.readLayerMeta(e.Name())
		if meta != nil {
			os.Remove(filepath.Join(s.dir, "l", meta.Short))
			st.Bytes += meta.Size
		}
		if err := os.RemoveAll(filepath.Join(s.dir, "layers", e.Name())); err != nil {
			return st, fmt.Errorf("removing layer %s: %w", e.Name(), err)
		}
		st.Layers++
	}
	// Short links whose layer is gone (a crash between the two removals).
	links, _ := os.ReadDir(filepath.Join(s.dir, "l"))
	for _, e := range links {
		p := filepath.Join(s.dir, "l", e.Name())
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			os.Remove(p)
		}
	}
	blobs, err := os.ReadDir(filepath.Join(s.dir, "blobs", "sha256"))
	if err != nil {
		return st, err
	}
	for _, e := range blobs {
		if keepBlobs[e.Name()] {
			continue
		}
		if fi, err := e.Info(); err == nil {
			st.Bytes += fi.Size()
		}
		if err := os.Remove(filepath.Join(s.dir, "blobs", "sha256", e.Name())); err != nil {
			return st, err
		}
		st.Blobs++
	}
	if st.Images+st.Layers+st.Blobs > 0 {
		s.log.Info("image garbage collected", "images", st.Images, "layers", st.Layers, "blobs", st.Blobs, "bytes", st.Bytes)
	}
	return st, nil
}

// layerMeta is layers/<hex>/layer.json.
type layerMeta struct {
	DiffID    string `json:"diffId"`
	Blob      string `json:"blob"`
	MediaType string `json:"mediaType"`
	BlobSize  int64  `json:"blobSize"`
	Size      int64  `json:"size"`
	// Short names the layer's symlink in l/.
	Short string `json:"short"`
}

func (s *Store) readLayerMeta(hex string) (*layerMeta, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, "layers", hex, "layer.json"))
	if err != nil {
		return nil, err
	}
	var m layerMeta
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// layerDir returns the short path of the unpacked layer diffID, restoring
// its symlink if a crash lost it.
func (s *Store) layerDir(diffID string) (string, error) {
	hex := hexOf(diffID)
	m, err := s.readLayerMeta(hex)
	if err != nil {
		return "", fmt.Errorf("layer %s is missing from the store: %w", short(diffID), err)
	}
	link := filepath.Join(s.dir, "l", m.Short)
	if _, err := os.Stat(link); err != nil {
		os.Remove(link)
		if err := os.Symlink(filepath.Join("..", "layers", hex, "root"), link); err != nil {
			return "", err
		}
	}
	return link, nil
}

const emptyLayerName = "empty"

// emptyLayer returns an empty directory to stand for an image without
// layers.
func (s *Store) emptyLayer() (string, error) {
	dir := filepath.Join(s.dir, "layers", emptyLayerName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// newShort returns a fresh name for a layer's symlink: short, so that an
// overlay mount's option string (at most one page) can list many layers.
// Random rather than derived from the digest: a crafted layer cannot
// collide with another's name.
func newShort() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var raw [12]byte
	rand.Read(raw[:])
	for i := range raw {
		raw[i] = alphabet[int(raw[i])%len(alphabet)]
	}
	return string(raw[:])
}

// lockLayer serialises work on one layer (two imports sharing it).
func (s *Store) lockLayer(hex string) func() {
	s.layerMu.Lock()
	l := s.layerLocks[hex]
	if l == nil {
		l = &keyedLock{}
		s.layerLocks[hex] = l
	}
	l.refs++
	s.layerMu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.layerMu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.layerLocks, hex)
		}
		s.layerMu.Unlock()
	}
}

// removeContents empties dir.
func removeContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}
