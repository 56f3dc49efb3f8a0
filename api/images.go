package api

import (
	"net/http"
	"time"
)

// Error codes of the image routes (IMAGE_NOT_FOUND is in errors.go).
const (
	// CodeInvalidImage: the archive, manifest, config or a layer is
	// malformed or unsafe (a path out of the layer, a bad digest...).
	CodeInvalidImage Code = "INVALID_IMAGE"
	// CodeInvalidImageName: the image name or reference is not acceptable.
	CodeInvalidImageName Code = "INVALID_IMAGE_NAME"
	// CodeImageInUse: the image is the image of a sandbox; destroy those
	// sandboxes first.
	CodeImageInUse Code = "IMAGE_IN_USE"
	// CodeImageTooLarge: the image or upload exceeds the daemon's bounds
	// (--max-image-size, layer count).
	CodeImageTooLarge Code = "IMAGE_TOO_LARGE"
	// CodeRegistryUnavailable: the registry could not be reached or failed.
	CodeRegistryUnavailable Code = "REGISTRY_UNAVAILABLE"
	// CodeRegistryDenied: the registry refused the daemon's credentials
	// (from its docker config file, --registry-auth).
	CodeRegistryDenied Code = "REGISTRY_DENIED"
	// CodeImageBuildFailed: a Dockerfile or base image build failed; the
	// build's log says why.
	CodeImageBuildFailed Code = "IMAGE_BUILD_FAILED"
	// CodeBuilderUnavailable: the builder (buildah, mmdebstrap) is not
	// installed on the daemon's host.
	CodeBuilderUnavailable Code = "BUILDER_UNAVAILABLE"
	// CodeTooManyImageJobs: the caller's tenant has MaxImageJobsPerTenant
	// imports, pulls and builds in flight on the daemon (or the cluster's
	// gateway); retry when one has ended (Retry-After).
	CodeTooManyImageJobs Code = "TOO_MANY_IMAGE_JOBS"
	// CodeImageJobsBusy: the daemon (or gateway) has MaxImageJobs imports,
	// pulls and builds in flight in all; retry later (Retry-After).
	CodeImageJobsBusy Code = "IMAGE_JOBS_BUSY"
)

// Bounds of image work in flight: imports, pulls and builds (each may
// spool gigabytes to disk and hold a connection for minutes) per tenant
// (the admin namespace counts as one) and in all, on a daemon and on a
// cluster's gateway. Past them a call is refused at once, never queued.
const (
	MaxImageJobsPerTenant = 2
	MaxImageJobs          = 4
)

func init() {
	RegisterStatus(CodeInvalidImage, http.StatusBadRequest)
	RegisterStatus(CodeInvalidImageName, http.StatusBadRequest)
	RegisterStatus(CodeImageInUse, http.StatusConflict)
	RegisterStatus(CodeImageTooLarge, http.StatusRequestEntityTooLarge)
	RegisterStatus(CodeRegistryUnavailable, http.StatusBadGateway)
	RegisterStatus(CodeRegistryDenied, http.StatusForbidden)
	RegisterStatus(CodeImageBuildFailed, http.StatusUnprocessableEntity)
	RegisterStatus(CodeBuilderUnavailable, http.StatusServiceUnavailable)
	RegisterStatus(CodeTooManyImageJobs, http.StatusTooManyRequests)
	RegisterStatus(CodeImageJobsBusy, http.StatusServiceUnavailable)
}

// Image is one image of the daemon's store, as listed and inspected.
type Image struct {
	// Names point at the image; empty for an image kept only because a
	// sandbox was created from it before its name moved on.
	Names []string `json:"names"`
	// Shared is set, for a tenant's key, on an image of the admin
	// namespace (or the host image): every tenant sees and uses it, only
	// an admin removes it (docs/tenants.md).
	Shared bool `json:"shared,omitempty"`
	// Digest is the image ID: the digest of its config ("sha256:..").
	// Empty for the built-in "host" image.
	Digest string `json:"digest,omitempty"`
	// ManifestDigest is the digest of the manifest the store keeps.
	ManifestDigest string `json:"manifestDigest,omitempty"`
	// Size is the bytes of the unpacked layers (regular files).
	Size int64 `json:"size"`
	// BlobSize is the bytes of the compressed layers kept for builds.
	BlobSize int64 `json:"blobSize"`
	// Created is the creation time the image's config states, if any.
	Created *time.Time `json:"created,omitempty"`
	// ImportedAt is when the image entered the store.
	ImportedAt *time.Time `json:"importedAt,omitempty"`
	// Source: "host", "docker-archive", "oci-layout", "registry REF",
	// "build" or "base".
	Source string `json:"source"`
	// Nodes, on a cluster's gateway, are the ready nodes that have the
	// image (docs/cluster.md); a node's own answer has none.
	Nodes        []string     `json:"nodes,omitempty"`
	OS           string       `json:"os,omitempty"`
	Architecture string       `json:"architecture,omitempty"`
	Config       ImageConfig  `json:"config"`
	Layers       []ImageLayer `json:"layers,omitempty"`
}

// ImageConfig is how an image says it should run. Env is the base of
// every sandbox's environment (sandbox and command env override it),
// WorkingDir is where sessions start (default /workspace), and
// Entrypoint+Cmd is the image's main process.
type ImageConfig struct {
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	User         string            `json:"user,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StopSignal   string            `json:"stopSignal,omitempty"`
}

// ImageLayer is one layer of an image, lowest first.
type ImageLayer struct {
	// DiffID is the digest of the uncompressed layer (its store key).
	DiffID    string `json:"diffId"`
	Blob      string `json:"blob"`
	MediaType string `json:"mediaType"`
	// Size is the bytes of regular files in the layer.
	Size     int64 `json:"size"`
	BlobSize int64 `json:"blobSize"`
}

// ImageList is the body of GET /v1/images.
type ImageList struct {
	Images []Image `json:"images"`
}

// ImagePullRequest is the body of POST /v1/images/pull.
type ImagePullRequest struct {
	// Ref is the image reference, e.g. "registry.example.com/team/app:v1".
	// Required; at most 512 bytes.
	Ref string `json:"ref"`
	// Name stores the image under this name. Default: Ref as given.
	Name string `json:"name,omitempty"`
}

// ImageBuildBaseRequest is the (optional) body of POST
// /v1/images/build-base.
type ImageBuildBaseRequest struct {
	// Rebuild ignores the daemon's cached build of the recipe.
	Rebuild bool `json:"rebuild,omitempty"`
}

// Build stream event types.
const (
	// BuildEventLog is a line of the builder's output (Data, without the
	// newline; Stream is "stdout" or "stderr").
	BuildEventLog = "log"
	// BuildEventComplete ends a successful build; Image is the result.
	BuildEventComplete = "complete"
	// BuildEventError ends a failed build with Code and Message.
	BuildEventError = "error"
)

// BuildEvent is one event of the build streams (POST /v1/images/build and
// /v1/images/build-base): any number of log events, then exactly one
// complete or error.
type BuildEvent struct {
	Type    string `json:"type"`
	Data    string `json:"data,omitempty"`
	Stream  string `json:"stream,omitempty"`
	Image   *Image `json:"image,omitempty"`
	Code    Code   `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// Build query parameters (POST /v1/images/build takes the build context as
// a tar body, so its options are in the query).
const (
	// BuildParamName is the name the result is stored under. Required.
	BuildParamName = "name"
	// BuildParamDockerfile is the Dockerfile's path in the context.
	// Default "Dockerfile".
	BuildParamDockerfile = "dockerfile"
	// BuildParamArg is a build argument K=V (repeatable).
	BuildParamArg = "buildArg"
	// ImportParamName is the name POST /v1/images/import stores under.
	ImportParamName = "name"
)
