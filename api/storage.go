package api

import (
	"net/http"
	"time"
)

// Error codes of bucket mounts, secrets and volumes (docs/storage.md).
const (
	// CodeBucketUnreachable: the S3 endpoint did not answer (down, wrong
	// address, TLS failure), or the FUSE client could not mount.
	CodeBucketUnreachable Code = "BUCKET_UNREACHABLE"
	// CodeBucketAuthFailed: the endpoint refused the credentials.
	CodeBucketAuthFailed Code = "BUCKET_AUTH_FAILED"
	// CodeBucketEndpointForbidden: a tenant's mount names an endpoint that
	// resolves to an address kept out of tenants' reach (loopback,
	// link-local, the host's own addresses, the sandbox subnet).
	CodeBucketEndpointForbidden Code = "BUCKET_ENDPOINT_FORBIDDEN"
	// CodeBucketNotFound: the endpoint has no such bucket.
	CodeBucketNotFound Code = "BUCKET_NOT_FOUND"
	// CodeMountPathInvalid: the path is relative, not clean, a system
	// tree (/proc, /usr, /.sandboxd ...), or crosses a symlink or mount.
	CodeMountPathInvalid Code = "MOUNT_PATH_INVALID"
	// CodeMountPathInUse: another mount of the sandbox is at, over or
	// under the path.
	CodeMountPathInUse Code = "MOUNT_PATH_IN_USE"
	// CodeMountNotFound: the sandbox has no bucket mount at the path.
	CodeMountNotFound Code = "MOUNT_NOT_FOUND"
	// CodeSecretNotFound: no secret has the name.
	CodeSecretNotFound Code = "SECRET_NOT_FOUND"
	// CodeVolumeNotFound: no volume has the name.
	CodeVolumeNotFound Code = "VOLUME_NOT_FOUND"
	// CodeVolumeExists: a volume with the name exists.
	CodeVolumeExists Code = "VOLUME_EXISTS"
	// CodeVolumeInUse: a sandbox uses the volume.
	CodeVolumeInUse Code = "VOLUME_IN_USE"
)

func init() {
	RegisterStatus(CodeBucketUnreachable, http.StatusBadGateway)
	RegisterStatus(CodeBucketAuthFailed, http.StatusForbidden)
	RegisterStatus(CodeBucketEndpointForbidden, http.StatusForbidden)
	RegisterStatus(CodeBucketNotFound, http.StatusNotFound)
	RegisterStatus(CodeMountPathInvalid, http.StatusBadRequest)
	RegisterStatus(CodeMountPathInUse, http.StatusConflict)
	RegisterStatus(CodeMountNotFound, http.StatusNotFound)
	RegisterStatus(CodeSecretNotFound, http.StatusNotFound)
	RegisterStatus(CodeVolumeNotFound, http.StatusNotFound)
	RegisterStatus(CodeVolumeExists, http.StatusConflict)
	RegisterStatus(CodeVolumeInUse, http.StatusConflict)
}

// BucketCredentials sign a mount's requests. They are sent once, kept by
// the daemon in a 0600 file, and never returned or put in the sandbox.
type BucketCredentials struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	// SessionToken is for temporary credentials. Optional.
	SessionToken string `json:"sessionToken,omitempty"`
}

// MountRequest is the body of POST /v1/sandboxes/{id}/mounts.
type MountRequest struct {
	// Bucket is the bucket's name (3-63 of a-z, 0-9, '.', '-').
	Bucket string `json:"bucket"`
	// Prefix mounts only the keys below it ("data/2024"). Optional.
	Prefix string `json:"prefix,omitempty"`
	// Path is where the bucket appears in the sandbox: absolute, clean,
	// outside the system trees. Missing directories are created.
	Path string `json:"path"`
	// Endpoint is the S3 endpoint's URL, http(s)://HOST[:PORT].
	Endpoint string `json:"endpoint"`
	// Region signs requests; "us-east-1" when empty (R2: "auto").
	Region string `json:"region,omitempty"`
	// ReadOnly: writes in the sandbox fail with EROFS.
	ReadOnly bool `json:"readOnly,omitempty"`
	// Credentials, or Secret: the name of a secret holding
	// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally
	// AWS_SESSION_TOKEN. Exactly one of the two.
	Credentials *BucketCredentials `json:"credentials,omitempty"`
	Secret      string             `json:"secret,omitempty"`
}

// Mount statuses.
const (
	MountStatusMounted = "mounted" // in place and its FUSE client answers
	MountStatusBroken  = "broken"  // the FUSE client died and could not be restarted; see reason
	MountStatusIdle    = "idle"    // the sandbox is not running; the mount returns when it starts
)

// Mount is one bucket mounted into a sandbox. Credentials are never part
// of it.
type Mount struct {
	Path     string `json:"path"`
	Bucket   string `json:"bucket"`
	Prefix   string `json:"prefix,omitempty"`
	Endpoint string `json:"endpoint"`
	Region   string `json:"region,omitempty"`
	ReadOnly bool   `json:"readOnly"`
	// Secret is the named secret the credentials came from, if any.
	Secret string `json:"secret,omitempty"`
	// Status is mounted, broken or idle; Reason says why it is broken.
	Status    string    `json:"status"`
	Reason    string    `json:"reason,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// MountList is the answer of GET /v1/sandboxes/{id}/mounts.
type MountList struct {
	Mounts []Mount `json:"mounts"`
}

// SecretRequest is the body of PUT /v1/secrets/{name}: environment-style
// variables (names of A-Z, 0-9 and '_'), stored 0600 by the daemon and
// never returned.
type SecretRequest struct {
	Values map[string]string `json:"values"`
}

// Secret is a secret as listed: its name and the names of its variables,
// never their values.
type Secret struct {
	Name      string    `json:"name"`
	Keys      []string  `json:"keys"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// SecretList is the answer of GET /v1/secrets.
type SecretList struct {
	Secrets []Secret `json:"secrets"`
}

// VolumeMount puts a named volume at Path of a sandbox.
type VolumeMount struct {
	Name string `json:"name"`
	// Path is absolute, clean, outside the system trees.
	Path string `json:"path"`
	// ReadOnly: writes in the sandbox fail with EROFS.
	ReadOnly bool `json:"readOnly,omitempty"`
}

// VolumeRequest is the body of POST /v1/volumes.
type VolumeRequest struct {
	// Name: 1-63 of a-z, 0-9, '_', '.', '-'.
	Name string `json:"name"`
	// SizeBytes is the volume's quota; default 10 GiB, from 64 MiB to
	// 1 TiB. The host's disk holds only what is written.
	SizeBytes int64 `json:"sizeBytes,omitempty"`
}

// Volume is a named volume.
type Volume struct {
	Name string `json:"name"`
	// Tenant owns the volume ("default": the admin namespace); a tenant's
	// volume names are its own, and only its sandboxes mount them.
	Tenant    string `json:"tenant,omitempty"`
	SizeBytes int64  `json:"sizeBytes"`
	// UsedBytes is what its files take now.
	UsedBytes int64 `json:"usedBytes"`
	// Sandboxes are the IDs of the sandboxes that mount it.
	Sandboxes []string  `json:"sandboxes"`
	CreatedAt time.Time `json:"createdAt"`
}

// VolumeList is the answer of GET /v1/volumes.
type VolumeList struct {
	Volumes []Volume `json:"volumes"`
}
