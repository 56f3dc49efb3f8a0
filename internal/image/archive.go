package image

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Bounds of an uploaded archive's table of contents.
const (
	maxArchiveMembers = 100_000
	maxIndexDepth     = 4
)

// files is a read-only set of named files: the members of a tar archive,
// or the files of a directory.
type files interface {
	open(name string) (io.ReadCloser, int64, error)
	has(name string) bool
}

// tarFiles indexes the regular files of a tar archive on disk, so each can
// be read in place (a docker save archive is read in any order).
type tarFiles struct {
	f       *os.File
	members map[string]tarMember
}

type tarMember struct{ off, size int64 }

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func indexTar(f *os.File) (*tarFiles, error) {
	cr := &countReader{r: f}
	tr := tar.NewReader(cr)
	t := &tarFiles{f: f, members: map[string]tarMember{}}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: the archive is not a valid tar file: %v", ErrInvalid, err)
		}
		if len(t.members) >= maxArchiveMembers {
			return nil, fmt.Errorf("%w: the archive has more than %d files", ErrTooLarge, maxArchiveMembers)
		}
		if hdr.Typeflag != tar.TypeReg { // tar.Reader reports legacy TypeRegA as TypeReg
			continue
		}
		if hdr.Size < 0 {
			return nil, fmt.Errorf("%w: archive member %q has a negative size", ErrInvalid, hdr.Name)
		}
		// tar.Reader reads whole 512-byte blocks and no further, so after
		// Next the file is positioned at the member's data (no sparse
		// members are expected in image archives).
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		t.members[name] = tarMember{off: cr.n, size: hdr.Size}
	}
	return t, nil
}

func (t *tarFiles) has(name string) bool { _, ok := t.members[name]; return ok }

func (t *tarFiles) open(name string) (io.ReadCloser, int64, error) {
	m, ok := t.members[path.Clean(name)]
	if !ok {
		return nil, 0, fmt.Errorf("%w: the archive has no %q", ErrInvalid, name)
	}
	return io.NopCloser(io.NewSectionReader(t.f, m.off, m.size)), m.size, nil
}

// dirFiles are the files of a directory (an OCI layout written by
// buildah), opened through os.Root so that no name leads outside.
type dirFiles struct{ root *os.Root }

func (d dirFiles) has(name string) bool {
	_, err := d.root.Stat(name)
	return err == nil
}

func (d dirFiles) open(name string) (io.ReadCloser, int64, error) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %q: %v", ErrInvalid, name, err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %q is not a regular file", ErrInvalid, name)
	}
	return f, fi.Size(), nil
}

func readFile(fsys files, name string, max int64) ([]byte, error) {
	rc, size, err := fsys.open(name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > max {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, name, max)
	}
	return readBounded(rc, max, name)
}

// archiveSource reads an image from a docker save archive or an OCI image
// layout (both as files). want, if set, chooses among several images by
// name. It returns the source and the name the archive gives the image,
// if any.
func archiveSource(fsys files, want string) (*source, string, error) {
	switch {
	case fsys.has("index.json") && fsys.has("oci-layout"):
		return ociSource(fsys, want)
	case fsys.has("manifest.json"):
		return dockerSource(fsys, want)
	}
	return nil, "", fmt.Errorf("%w: not a docker save archive (no manifest.json) nor an OCI image layout (no oci-layout and index.json)", ErrInvalid)
}

// dockerSource reads a `docker save` archive: manifest.json lists, per
// image, its config file and its layer tars, lowest first.
func dockerSource(fsys files, want string) (*source, string, error) {
	data, err := readFile(fsys, "manifest.json", maxManifestBytes)
	if err != nil {
		return nil, "", err
	}
	var entries []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, "", fmt.Errorf("%w: manifest.json: %v", ErrInvalid, err)
	}
	if len(entries) == 0 {
		return nil, "", fmt.Errorf("%w: manifest.json lists no image", ErrInvalid)
	}
	pick := -1
	if len(entries) == 1 {
		pick = 0
	} else {
		for i, e := range entries {
			for _, t := range e.RepoTags {
				if t == want || strings.TrimPrefix(t, "docker.io/library/") == want {
					pick = i
				}
			}
		}
		if pick < 0 {
			var tags []string
			for _, e := range entries {
				tags = append(tags, e.RepoTags...)
			}
			return nil, "", fmt.Errorf("%w: the archive holds %d images (%s); name the one to import with --name", ErrInvalid, len(entries), strings.Join(tags, ", "))
		}
	}
	e := entries[pick]
	raw, err := readFile(fsys, e.Config, maxConfigBytes)
	if err != nil {
		return nil, "", err
	}
	src := &source{kind: "docker-archive", rawConfig: raw}
	for _, l := range e.Layers {
		name := l
		if !fsys.has(name) {
			return nil, "", fmt.Errorf("%w: layer %q is missing from the archive", ErrInvalid, name)
		}
		src.layers = append(src.layers, layerSource{
			size: -1,
			open: func(context.Context) (io.ReadCloser, error) {
				rc, _, err := fsys.open(name)
				return rc, err
			},
		})
	}
	suggested := ""
	if len(e.RepoTags) > 0 {
		suggested = e.RepoTags[0]
	}
	return src, suggested, nil
}

// ociSource reads an OCI image layout: index.json points at manifests (or
// nested indexes), blobs/<alg>/<hex> holds everything by digest.
func ociSource(fsys files, want string) (*source, string, error) {
	data, err := readFile(fsys, "index.json", maxManifestBytes)
	if err != nil {
		return nil, "", err
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("%w: index.json: %v", ErrInvalid, err)
	}
	type candidate struct {
		desc v1.Descriptor
		name string
	}
	var cands []candidate
	var walk func(idx *v1.IndexManifest, depth int, name string) error
	walk = func(idx *v1.IndexManifest, depth int, name string) error {
		if depth > maxIndexDepth {
			return fmt.Errorf("%w: indexes nested more than %d deep", ErrInvalid, maxIndexDepth)
		}
		for _, d := range idx.Manifests {
			n := name
			if a := d.Annotations["io.containerd.image.name"]; a != "" {
				n = a
			} else if a := d.Annotations["org.opencontainers.image.ref.name"]; a != "" && n == "" {
				n = a
			}
			if d.Platform != nil && (d.Platform.OS != "linux" || d.Platform.Architecture != goruntime.GOARCH) {
				continue
			}
			switch {
			case d.MediaType.IsIndex():
				raw, err := readBlob(fsys, d, maxManifestBytes)
				if err != nil {
					return err
				}
				sub, err := v1.ParseIndexManifest(bytes.NewReader(raw))
				if err != nil {
					return fmt.Errorf("%w: index %s: %v", ErrInvalid, d.Digest, err)
				}
				if err := walk(sub, depth+1, n); err != nil {
					return err
				}
			case d.MediaType.IsImage():
				cands = append(cands, candidate{d, n})
			}
		}
		return nil
	}
	if err := walk(idx, 0, ""); err != nil {
		return nil, "", err
	}
	var chosen *candidate
	switch {
	case len(cands) == 0:
		return nil, "", fmt.Errorf("%w: the layout holds no image for linux/%s", ErrInvalid, goruntime.GOARCH)
	case len(cands) == 1:
		chosen = &cands[0]
	default:
		for i := range cands {
			if want != "" && cands[i].name == want {
				chosen = &cands[i]
			}
		}
		if chosen == nil {
			return nil, "", fmt.Errorf("%w: the layout holds %d images for linux/%s; name the one to import with --name", ErrInvalid, len(cands), goruntime.GOARCH)
		}
	}
	raw, err := readBlob(fsys, chosen.desc, maxManifestBytes)
	if err != nil {
		return nil, "", err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, "", fmt.Errorf("%w: manifest %s: %v", ErrInvalid, chosen.desc.Digest, err)
	}
	src, err := manifestSource("oci-layout", m, func(d v1.Descriptor, max int64) ([]byte, error) {
		return readBlob(fsys, d, max)
	}, func(d v1.Descriptor) func(context.Context) (io.ReadCloser, error) {
		return func(context.Context) (io.ReadCloser, error) {
			rc, _, err := fsys.open(blobPath(d.Digest))
			return rc, err
		}
	})
	if err != nil {
		return nil, "", err
	}
	return src, chosen.name, nil
}

// manifestSource turns a manifest into a source: its config read with
// readSmall, its layers opened with openLayer.
func manifestSource(kind string, m *v1.Manifest, readSmall func(v1.Descriptor, int64) ([]byte, error),
	openLayer func(v1.Descriptor) func(context.Context) (io.ReadCloser, error)) (*source, error) {
	if m.SchemaVersion != 2 {
		return nil, fmt.Errorf("%w: manifest schema version %d is not supported", ErrInvalid, m.SchemaVersion)
	}
	if !m.Config.MediaType.IsConfig() && m.Config.MediaType != "" {
		return nil, fmt.Errorf("%w: %q is not an image config (an artifact, not an image?)", ErrInvalid, m.Config.MediaType)
	}
	raw, err := readSmall(m.Config, maxConfigBytes)
	if err != nil {
		return nil, err
	}
	src := &source{kind: kind, rawConfig: raw, configDigest: m.Config.Digest}
	for _, d := range m.Layers {
		if len(d.URLs) > 0 {
			return nil, fmt.Errorf("%w: layer %s must be fetched from elsewhere (foreign URLs are not followed)", ErrInvalid, d.Digest)
		}
		if d.Digest.Algorithm != "sha256" {
			return nil, fmt.Errorf("%w: layer digest %s is not sha256", ErrInvalid, d.Digest)
		}
		if d.Size < 0 {
			return nil, fmt.Errorf("%w: layer %s has a negative size", ErrInvalid, d.Digest)
		}
		src.layers = append(src.layers, layerSource{
			digest: d.Digest, size: d.Size, mediaType: d.MediaType, open: openLayer(d),
		})
	}
	return src, nil
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// readBlob reads a small blob of a layout and checks its digest and size.
func readBlob(fsys files, d v1.Descriptor, max int64) ([]byte, error) {
	if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
		return nil, fmt.Errorf("%w: digest %q is not sha256", ErrInvalid, d.Digest)
	}
	data, err := readFile(fsys, blobPath(d.Digest), max)
	if err != nil {
		return nil, err
	}
	return data, checkBlob(data, d)
}

func checkBlob(data []byte, d v1.Descriptor) error {
	h, _, err := v1.SHA256(bytes.NewReader(data))
	if err != nil {
		return err
	}
	if h != d.Digest {
		return fmt.Errorf("%w: blob %s has digest %s", ErrInvalid, d.Digest, h)
	}
	if d.Size != 0 && d.Size != int64(len(data)) {
		return fmt.Errorf("%w: blob %s is %d bytes, its descriptor says %d", ErrInvalid, d.Digest, len(data), d.Size)
	}
	return nil
}

// ImportArchive imports the image in the archive at path (a docker save
// tarball or an OCI image layout as a tar) under name; an empty name takes
// the name the archive gives, if any; name may be a tenant's (Scoped), and
// Scoped(ns, "") takes the archive's name in ns. It returns the image.
func (s *Store) ImportArchive(ctx context.Context, archive, name string) (Image, error) {
	if _, local := SplitScoped(name); local != "" {
		if err := validateKey(name); err != nil {
			return Image{}, err
		}
	}
	f, err := os.Open(archive)
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	fsys, err := indexTar(f)
	if err != nil {
		return Image{}, err
	}
	return s.importFiles(ctx, fsys, name)
}

// ImportStream imports an archive (see ImportArchive) read from r, such as
// an upload: it is spooled to the store's staging area first, and refused
// with ErrTooLarge beyond Options.MaxImageBytes.
func (s *Store) ImportStream(ctx context.Context, r io.Reader, name string) (Image, error) {
	if _, local := SplitScoped(name); local != "" {
		if err := validateKey(name); err != nil {
			return Image{}, err
		}
	}
	tmp, err := s.tmpDir("upload-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(tmp)
	p := filepath.Join(tmp, "archive.tar")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Image{}, err
	}
	n, err := io.Copy(f, io.LimitReader(r, s.opts.MaxImageBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Image{}, fmt.Errorf("receiving the archive: %w", err)
	}
	if n > s.opts.MaxImageBytes {
		return Image{}, fmt.Errorf("%w: the archive is larger than %d bytes", ErrTooLarge, s.opts.MaxImageBytes)
	}
	return s.ImportArchive(ctx, p, name)
}

// ImportLayout imports the OCI image layout in directory dir under name.
func (s *Store) ImportLayout(ctx context.Context, dir, name string) (Image, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Image{}, err
	}
	defer root.Close()
	return s.importFiles(ctx, dirFiles{root}, name)
}

func (s *Store) importFiles(ctx context.Context, fsys files, name string) (Image, error) {
	_, want := SplitScoped(name)
	src, suggested, err := archiveSource(fsys, want)
	if err != nil {
		return Image{}, err
	}
	if ns, local := SplitScoped(name); local == "" {
		local = normalizeSuggested(suggested)
		if local == "" {
			return Image{}, fmt.Errorf("%w: the archive does not name its image; give it a name", ErrInvalidName)
		}
		if err := ValidateName(local); err != nil {
			return Image{}, err
		}
		name = Scoped(ns, local)
	}
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

// normalizeSuggested shortens the names archives carry: docker.io's
// library images lose their prefix ("docker.io/library/alpine:3" is
// "alpine:3").
func normalizeSuggested(n string) string {
	n = strings.TrimPrefix(n, "docker.io/library/")
	return strings.TrimPrefix(n, "library/")
}
