package image

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/sandboxd/sandboxd/internal/atomicfile"
	"github.com/sandboxd/sandboxd/internal/bounded"
)

// Bounds of the JSON documents of an image.
const (
	maxConfigBytes   = 8 << 20
	maxManifestBytes = 4 << 20
	// maxTrailingBytes bounds what may follow a layer's end-of-archive
	// marker (block padding).
	maxTrailingBytes = 1 << 20
)

// source is an image as a source offers it, before it is in the store.
type source struct {
	// kind goes to Image.Source.
	kind string
	// rawConfig is the image config; its digest is what the store computes.
	rawConfig []byte
	// configDigest, when the source names one (manifests do), must match.
	configDigest v1.Hash
	layers       []layerSource
}

// layerSource is one layer as a source offers it.
type layerSource struct {
	// digest and size of the blob, when the source names them (manifests
	// do; docker save archives do not).
	digest v1.Hash
	size   int64 // -1: unknown
	// mediaType, when known, says the compression; empty: sniffed.
	mediaType types.MediaType
	open      func(ctx context.Context) (io.ReadCloser, error)
}

// ingest adds the image src to the store and returns it. Layers already
// in the store are not read again.
func (s *Store) ingest(ctx context.Context, src *source) (*record, error) {
	if len(src.rawConfig) > maxConfigBytes {
		return nil, fmt.Errorf("%w: config is larger than %d bytes", ErrTooLarge, maxConfigBytes)
	}
	sum := sha256.Sum256(src.rawConfig)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if src.configDigest != (v1.Hash{}) && src.configDigest.String() != digest {
		return nil, fmt.Errorf("%w: config digest is %s, the manifest says %s", ErrInvalid, digest, src.configDigest)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(src.rawConfig))
	if err != nil {
		return nil, fmt.Errorf("%w: parsing image config: %v", ErrInvalid, err)
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return nil, fmt.Errorf("%w: the image is for %s, not linux", ErrInvalid, cfg.OS)
	}
	if cfg.Architecture != "" && cfg.Architecture != goruntime.GOARCH {
		return nil, fmt.Errorf("%w: the image is for %s; this host runs %s", ErrInvalid, cfg.Architecture, goruntime.GOARCH)
	}
	if len(cfg.RootFS.DiffIDs) != len(src.layers) {
		return nil, fmt.Errorf("%w: the config lists %d layers, the manifest %d", ErrInvalid, len(cfg.RootFS.DiffIDs), len(src.layers))
	}
	if len(src.layers) > s.opts.MaxLayers {
		return nil, fmt.Errorf("%w: %d layers; at most %d are allowed", ErrTooLarge, len(src.layers), s.opts.MaxLayers)
	}
	for _, d := range cfg.RootFS.DiffIDs {
		if d.Algorithm != "sha256" || len(d.Hex) != 64 {
			return nil, fmt.Errorf("%w: layer diff ID %s is not a sha256 digest", ErrInvalid, d)
		}
	}

	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	budget := s.opts.MaxImageBytes
	r := &record{
		Digest: digest, Source: src.kind, OS: cfg.OS, Architecture: cfg.Architecture,
		Created: cfg.Created.Time.UTC(), ImportedAt: s.opts.Now().UTC(), Config: configOf(cfg),
	}
	for i, ls := range src.layers {
		l, err := s.ensureLayer(ctx, cfg.RootFS.DiffIDs[i], ls, &budget)
		if err != nil {
			return nil, fmt.Errorf("layer %d of %d: %w", i+1, len(src.layers), err)
		}
		r.Layers = append(r.Layers, l)
	}
	if _, err := s.putBlob(src.rawConfig); err != nil {
		return nil, err
	}
	manifest := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config: v1.Descriptor{
			MediaType: types.OCIConfigJSON, Size: int64(len(src.rawConfig)),
			Digest: v1.Hash{Algorithm: "sha256", Hex: hexOf(digest)},
		},
	}
	for _, l := range r.Layers {
		h, _ := v1.NewHash(l.Blob)
		manifest.Layers = append(manifest.Layers, v1.Descriptor{MediaType: types.MediaType(l.MediaType), Size: l.BlobSize, Digest: h})
	}
	rawManifest, err := json.Marshal(manifest)
	if err != nil {
		return nil, err
	}
	if r.ManifestDigest, err = s.putBlob(rawManifest); err != nil {
		return nil, err
	}
	// An image already in the store keeps its first import time.
	if old, err := s.readRecord(digest); err == nil {
		r.ImportedAt = old.ImportedAt
	}
	if err := s.writeRecord(r); err != nil {
		return nil, fmt.Errorf("recording image: %w", err)
	}
	return r, nil
}

func configOf(cfg *v1.ConfigFile) Config {
	c := Config{
		Env: cfg.Config.Env, WorkingDir: cfg.Config.WorkingDir, User: cfg.Config.User,
		Entrypoint: cfg.Config.Entrypoint, Cmd: cfg.Config.Cmd, Labels: cfg.Config.Labels,
		StopSignal: cfg.Config.StopSignal,
	}
	for p := range cfg.Config.ExposedPorts {
		c.ExposedPorts = append(c.ExposedPorts, p)
	}
	sort.Strings(c.ExposedPorts)
	return c
}

// putBlob stores data in the content store and returns its digest.
func (s *Store) putBlob(data []byte) (string, error) {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	p := filepath.Join(s.dir, "blobs", "sha256", h)
	if _, err := os.Stat(p); err == nil {
		return "sha256:" + h, nil
	}
	if err := atomicfile.Write(p, data, 0o600); err != nil {
		return "", fmt.Errorf("storing blob: %w", err)
	}
	return "sha256:" + h, nil
}

// ensureLayer makes sure the layer diffID is unpacked in the store, with
// its blob, reading it from ls if it is not, and returns it.
func (s *Store) ensureLayer(ctx context.Context, diffID v1.Hash, ls layerSource, budget *int64) (Layer, error) {
	unlock := s.lockLayer(diffID.Hex)
	defer unlock()
	if m, err := s.readLayerMeta(diffID.Hex); err == nil {
		if _, err := os.Stat(filepath.Join(s.dir, "blobs", "sha256", hexOf(m.Blob))); err == nil {
			if m.Size > *budget {
				return Layer{}, fmt.Errorf("%w: the image is larger than %d bytes unpacked", ErrTooLarge, s.opts.MaxImageBytes)
			}
			*budget -= m.Size
			if _, err := s.layerDir(m.DiffID); err != nil {
				return Layer{}, err
			}
			return Layer{DiffID: m.DiffID, Blob: m.Blob, MediaType: m.MediaType, BlobSize: m.BlobSize, Size: m.Size}, nil
		}
		// The blob is gone (a crash during collection): unpack again.
		os.RemoveAll(filepath.Join(s.dir, "layers", diffID.Hex))
	}
	tmp, err := s.tmpDir("layer-")
	if err != nil {
		return Layer{}, err
	}
	defer os.RemoveAll(tmp)
	rootDir := filepath.Join(tmp, "root")
	if err := os.Mkdir(rootDir, 0o755); err != nil {
		return Layer{}, err
	}
	blob, err := os.OpenFile(filepath.Join(tmp, "blob"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Layer{}, err
	}
	defer blob.Close()

	rc, err := ls.open(ctx)
	if err != nil {
		return Layer{}, err
	}
	defer rc.Close()
	in := io.Reader(rc)
	if ls.size >= 0 {
		in = io.LimitReader(rc, ls.size+1) // one more: to see it is too long
	}
	rawHash := sha256.New()
	rawCount := &countWriter{}
	raw := bufio.NewReaderSize(io.TeeReader(in, io.MultiWriter(rawHash, rawCount)), 64<<10)

	comp, err := compressionOf(ls.mediaType, raw)
	if err != nil {
		return Layer{}, err
	}
	var tarStream io.Reader
	var blobHash hash.Hash
	blobCount := &countWriter{}
	var gz *gzip.Writer
	var mediaType types.MediaType
	switch comp {
	case "gzip", "zstd":
		// Keep the blob as it came: its digest is the source's.
		raw2 := io.TeeReader(raw, blob)
		dec, err := decompressor(comp, raw2)
		if err != nil {
			return Layer{}, err
		}
		defer dec.Close()
		tarStream = dec
		blobHash, blobCount = rawHash, rawCount
		// The store's manifests are OCI ones: Docker media types are
		// renamed to their OCI equivalents.
		mediaType = types.OCILayer
		if comp == "zstd" {
			mediaType = types.OCILayerZStd
		}
	default:
		// An uncompressed layer is kept gzipped.
		blobHash = sha256.New()
		gz, _ = gzip.NewWriterLevel(io.MultiWriter(blob, blobHash, blobCount), gzip.BestSpeed)
		tarStream = io.TeeReader(raw, gz)
		mediaType = types.OCILayer
	}
	diffHash := sha256.New()
	tarStream = io.TeeReader(tarStream, diffHash)

	st, err := unpackLayer(ctx, tarStream, rootDir, unpackLimits{budget: budget, maxEntries: defaultMaxEntries})
	if err != nil {
		if ls.size >= 0 && rawCount.n > ls.size {
			return Layer{}, fmt.Errorf("%w: layer blob is longer than its %d bytes", ErrInvalid, ls.size)
		}
		return Layer{}, err
	}
	// Read to the end, so the digests cover everything.
	if n, err := io.Copy(io.Discard, io.LimitReader(tarStream, maxTrailingBytes+1)); err != nil {
		return Layer{}, fmt.Errorf("%w: reading layer: %v", ErrInvalid, err)
	} else if n > maxTrailingBytes {
		return Layer{}, fmt.Errorf("%w: layer has more than %d bytes after its end", ErrInvalid, maxTrailingBytes)
	}
	if comp != "gzip" && comp != "zstd" {
		if err := gz.Close(); err != nil {
			return Layer{}, err
		}
	} else if _, err := io.Copy(blob, raw); err != nil { // trailing compressed bytes
		return Layer{}, err
	}
	if ls.size >= 0 && rawCount.n != ls.size {
		return Layer{}, fmt.Errorf("%w: layer blob is %d bytes, the manifest says %d", ErrInvalid, rawCount.n, ls.size)
	}
	gotDiff := "sha256:" + hex.EncodeToString(diffHash.Sum(nil))
	if gotDiff != diffID.String() {
		return Layer{}, fmt.Errorf("%w: layer content digest is %s, the config says %s", ErrInvalid, gotDiff, diffID)
	}
	gotRaw := "sha256:" + hex.EncodeToString(rawHash.Sum(nil))
	if ls.digest != (v1.Hash{}) && gotRaw != ls.digest.String() {
		return Layer{}, fmt.Errorf("%w: layer blob digest is %s, the manifest says %s", ErrInvalid, gotRaw, ls.digest)
	}
	if err := blob.Sync(); err != nil {
		return Layer{}, err
	}
	if err := blob.Close(); err != nil {
		return Layer{}, err
	}
	blobDigest := "sha256:" + hex.EncodeToString(blobHash.Sum(nil))
	meta := layerMeta{
		DiffID: gotDiff, Blob: blobDigest, MediaType: string(mediaType),
		BlobSize: blobCount.n, Size: st.Size, Short: newShort(),
	}
	data, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, "layer.json"), data, 0o600); err != nil {
		return Layer{}, err
	}
	blobPath := filepath.Join(s.dir, "blobs", "sha256", hexOf(blobDigest))
	if err := os.Rename(filepath.Join(tmp, "blob"), blobPath); err != nil {
		return Layer{}, fmt.Errorf("storing layer blob: %w", err)
	}
	if err := os.Chmod(tmp, 0o711); err != nil {
		return Layer{}, err
	}
	final := filepath.Join(s.dir, "layers", diffID.Hex)
	os.RemoveAll(final) // a leftover without a blob (see above)
	if err := os.Rename(tmp, final); err != nil {
		return Layer{}, fmt.Errorf("installing layer: %w", err)
	}
	if _, err := s.layerDir(gotDiff); err != nil {
		return Layer{}, err
	}
	s.log.Info("layer unpacked", "diff_id", gotDiff, "bytes", st.Size, "entries", st.Entries, "skipped", st.Skipped)
	return Layer{DiffID: gotDiff, Blob: blobDigest, MediaType: string(mediaType), BlobSize: blobCount.n, Size: st.Size}, nil
}

// compressionOf says how a layer is compressed: from its media type when
// the source gives one, else from its first bytes.
func compressionOf(mt types.MediaType, r *bufio.Reader) (string, error) {
	switch {
	case strings.HasSuffix(string(mt), "+gzip") || strings.HasSuffix(string(mt), ".tar.gzip"):
		return "gzip", nil
	case strings.HasSuffix(string(mt), "+zstd"):
		return "zstd", nil
	case strings.HasSuffix(string(mt), ".tar") || strings.HasSuffix(string(mt), "diff.tar"):
		return "", nil
	case mt != "":
		return "", fmt.Errorf("%w: layer media type %q is not supported", ErrInvalid, mt)
	}
	head, err := r.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("%w: reading layer: %v", ErrInvalid, err)
	}
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return "gzip", nil
	case len(head) >= 4 && bytes.Equal(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd", nil
	}
	return "", nil
}

// maxZstdWindow bounds a zstd decoder's memory.
const maxZstdWindow = 128 << 20

func decompressor(comp string, r io.Reader) (io.ReadCloser, error) {
	switch comp {
	case "gzip":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%w: layer is not valid gzip: %v", ErrInvalid, err)
		}
		return zr, nil
	case "zstd":
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("%w: layer is not valid zstd: %v", ErrInvalid, err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(r), nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// readBounded reads at most max bytes of r; more is ErrTooLarge (the
// image's: IMAGE_TOO_LARGE).
func readBounded(r io.Reader, max int64, what string) ([]byte, error) {
	data, err := bounded.Read(r, max, what)
	if errors.Is(err, bounded.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrTooLarge, what, max)
	}
	return data, err
}
