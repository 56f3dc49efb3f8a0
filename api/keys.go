package api

import "time"

// Codes of tenancy.
const (
	// CodeQuotaExceeded: a tenant's quota refused the call; the message
	// names the quota (maxSandboxes, maxRunning or maxMemory).
	CodeQuotaExceeded Code = "QUOTA_EXCEEDED"
	// CodeForbidden: the route needs an admin key. Never answered for a
	// sandbox: another tenant's sandbox is SANDBOX_NOT_FOUND.
	CodeForbidden Code = "FORBIDDEN"
	// CodeKeyNotFound: no API key of that name.
	CodeKeyNotFound Code = "KEY_NOT_FOUND"
	// CodeKeyExists: an API key of that name exists.
	CodeKeyExists Code = "KEY_EXISTS"
)

func init() {
	RegisterStatus(CodeQuotaExceeded, 429)
	RegisterStatus(CodeForbidden, 403)
	RegisterStatus(CodeKeyNotFound, 404)
	RegisterStatus(CodeKeyExists, 409)
}

// TenantHeader lets an admin key act in a tenant's namespace: every
// sandbox ID of the request is that tenant's ("default": the admin
// namespace's). Refused (FORBIDDEN) for tenant keys.
const TenantHeader = "Sandbox-Tenant"

// Quotas bound what one tenant holds; 0 (or absent) is unlimited.
type Quotas struct {
	// MaxSandboxes is the most sandboxes the tenant has, in any status.
	MaxSandboxes int `json:"maxSandboxes,omitempty"`
	// MaxRunning is the most it runs at once.
	MaxRunning int `json:"maxRunning,omitempty"`
	// MaxMemory bounds the sum of the memory limits of its running
	// sandboxes, in bytes.
	MaxMemory int64 `json:"maxMemory,omitempty"`
}

// KeyCreateRequest is the body of POST /v1/keys.
type KeyCreateRequest struct {
	// Name names the key and its tenant: a DNS label of at most 32 bytes,
	// not "default".
	Name string `json:"name"`
	// Admin keys act in the admin namespace and see every tenant; they
	// have no quotas.
	Admin  bool   `json:"admin,omitempty"`
	Quotas Quotas `json:"quotas"`
}

// KeyCreated answers POST /v1/keys and POST /v1/keys/{name}/rotate. Key
// is the secret: shown once, kept nowhere (the daemon stores its hash).
type KeyCreated struct {
	Name   string `json:"name"`
	Key    string `json:"key"`
	Quotas Quotas `json:"quotas"`
	Admin  bool   `json:"admin,omitempty"`
}

// Usage is what a tenant holds now.
type Usage struct {
	Sandboxes int `json:"sandboxes"`
	Running   int `json:"running"`
	// Memory is the sum of the memory limits of its running sandboxes.
	Memory int64 `json:"memory"`
}

// Key is an API key as listed: never its secret.
type Key struct {
	Name      string    `json:"name"`
	Admin     bool      `json:"admin,omitempty"`
	Quotas    Quotas    `json:"quotas"`
	Usage     Usage     `json:"usage"`
	CreatedAt time.Time `json:"createdAt"`
	RotatedAt time.Time `json:"rotatedAt"`
}

// KeyList is the body of GET /v1/keys.
type KeyList struct {
	Keys []Key `json:"keys"`
}
