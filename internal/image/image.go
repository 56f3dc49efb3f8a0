// Package image is sandboxd's image store: OCI images, imported from a
// `docker save` tarball, an OCI image layout or a registry, built from a
// Dockerfile (by buildah) or from the base image recipe (by mmdebstrap),
// and kept in the state directory so that every sandbox of an image shares
// one read-only copy of its layers.
//
// Layout of the store (under Options.Dir, normally <state>/images):
//
//	blobs/sha256/<hex>     compressed layers, configs and manifests (content store)
//	layers/<hex>/root      a layer unpacked, named by its diff ID (the digest of its tar)
//	layers/<hex>/layer.json
//	l/<short>              a short symlink to layers/<hex>/root, used as an overlay lower
//	records/<hex>.json     one image: its config (Env, WorkingDir, Cmd...), its layers
//	names.json             image names → config digests
//	tmp/                   staging; emptied at start
//	host/                  the host image (package rootfs), never touched here
//
// Metadata are files, not rows of the registry database: the truth of the
// store is on disk (layer directories), and keeping the records beside it
// means one atomic rename installs an image, a copied state directory stays
// consistent, and a long import never holds the registry's single
// connection.
//
// Layers are unpacked once, when the first image that has them arrives,
// with ownership, modes, times and safe extended attributes kept, and OCI
// whiteouts turned into overlayfs ones (a 0/0 character device for a deleted
// file, trusted.overlay.opaque on a directory whose lower contents are
// hidden), so a layer directory is an overlay lower as it is. Every archive
// and registry answer is hostile input: paths that climb out of the layer
// (`..`, absolute, through symlinks), links to outside, huge files, bad
// digests and oversized images are refused with ErrInvalid or ErrTooLarge,
// and nothing half-written is ever visible under its final name.
//
// It must never write outside its directory, never trust a digest it did
// not compute, and never delete an image a sandbox uses.
package image

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Errors of the image domain; the API edge maps each to a code.
var (
	// ErrNotFound: no image of that name or digest.
	ErrNotFound = errors.New("image not found")
	// ErrInvalid: the image (archive, manifest, config, layer) is malformed
	// or unsafe.
	ErrInvalid = errors.New("invalid image")
	// ErrInvalidName: the image name is not acceptable.
	ErrInvalidName = errors.New("invalid image name")
	// ErrInUse: the image is used by a sandbox and cannot be removed.
	ErrInUse = errors.New("image in use")
	// ErrTooLarge: the image exceeds a size or count bound.
	ErrTooLarge = errors.New("image too large")
	// ErrRegistry: the registry could not be reached or failed.
	ErrRegistry = errors.New("registry unavailable")
	// ErrRegistryDenied: the registry refused our credentials.
	ErrRegistryDenied = errors.New("registry denied access")
	// ErrBuildFailed: a Dockerfile or base image build failed; the log says why.
	ErrBuildFailed = errors.New("image build failed")
	// ErrBuilderMissing: the builder (buildah, mmdebstrap) is not installed.
	ErrBuilderMissing = errors.New("image builder not installed")
)

// HostName is the built-in image made of the host's /usr (package rootfs).
const HostName = "host"

// BaseName is the image `image build-base` produces.
const BaseName = "base"

// Image is one image in the store, as reported to callers.
type Image struct {
	// Names are the names that point at the image (none for an image kept
	// only because a sandbox uses it).
	Names []string
	// Digest is the digest of the image's config (its image ID).
	Digest string
	// ManifestDigest is the digest of the manifest the store keeps.
	ManifestDigest string
	// Size is the bytes of the unpacked layers (regular files).
	Size int64
	// BlobSize is the bytes of the compressed layers the store keeps.
	BlobSize int64
	// Created is the image's creation time from its config (zero if absent).
	Created time.Time
	// ImportedAt is when the image entered the store.
	ImportedAt time.Time
	// Source says where it came from: "docker-archive", "oci-layout",
	// "registry <ref>", "build", "base" or "host".
	Source       string
	OS           string
	Architecture string
	Config       Config
	Layers       []Layer
}

// Config is what an image says about how to run it.
type Config struct {
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	User         string            `json:"user,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stopSignal,omitempty"`
}

// Layer is one layer of an image.
type Layer struct {
	// DiffID is the digest of the uncompressed layer tar.
	DiffID string `json:"diffId"`
	// Blob is the digest of the layer as the store keeps it (compressed).
	Blob      string `json:"blob"`
	MediaType string `json:"mediaType"`
	// BlobSize is the blob's size in bytes.
	BlobSize int64 `json:"blobSize"`
	// Size is the bytes of regular files in the unpacked layer.
	Size int64 `json:"size"`
}

// Bounds of names.
const maxNameLength = 255

var (
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$`)
	digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// ValidateName checks an image name for storing under: 1-255 of
// [A-Za-z0-9._/:@+-], starting with a letter or digit, neither "host"
// (built in) nor of the form of a digest (sha256:<hex>), which always
// means the image with that config digest.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > maxNameLength:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, maxNameLength)
	case name == HostName:
		return fmt.Errorf("%w: %q is the built-in host image", ErrInvalidName, name)
	case strings.HasPrefix(name, "sha256:"):
		return fmt.Errorf("%w: %q: names starting with sha256: are digests", ErrInvalidName, name)
	case !nameRE.MatchString(name):
		return fmt.Errorf("%w: %q: want letters, digits and ._/:@+- , starting with a letter or digit", ErrInvalidName, name)
	}
	return nil
}

// IsDigest reports whether ref is a config digest (sha256:<64 hex>).
func IsDigest(ref string) bool { return digestRE.MatchString(ref) }
