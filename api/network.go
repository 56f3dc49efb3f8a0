package api

import (
	"net/http"
	"time"
)

// Egress defaults: what happens to destinations no entry of a policy names.
const (
	EgressAllow = "allow"
	EgressDeny  = "deny"
)

// MaxPolicyEntries bounds a network policy: allowDomains, denyDomains,
// allowCidrs and denyCidrs together.
const MaxPolicyEntries = 256

// CodeInvalidNetworkPolicy: a network policy entry is malformed, out of
// bounds or does not fit the sandbox; Details["entry"] names it (e.g.
// "allowDomains[2]") and Details["value"] holds it.
const CodeInvalidNetworkPolicy Code = "INVALID_NETWORK_POLICY"

// CodeHostAccessForbidden: a tenant's sandbox names host addresses in
// allowHostCidrs that the operator has not opened to tenants (sandboxd
// --host-access-allow). 403.
const CodeHostAccessForbidden Code = "HOST_ACCESS_FORBIDDEN"

func init() { RegisterStatus(CodeHostAccessForbidden, http.StatusForbidden) }

// NetworkPolicy is a sandbox's egress policy: the body of
// PUT /v1/sandboxes/{id}/network, which replaces the whole policy of a
// running sandbox at once. Lists may be absent or empty.
type NetworkPolicy struct {
	// Mode, when given, must be the sandbox's mode ("internet"); it
	// cannot change after creation.
	Mode NetworkMode `json:"mode,omitempty"`
	// AllowDomains are names the sandbox may resolve and reach: "a.example"
	// (that name only) or "*.a.example" (every name below it). The
	// addresses a DNS answer for an allowed name holds are opened for the
	// answer's TTL.
	AllowDomains []string `json:"allowDomains"`
	// DenyDomains are names the sandbox may not resolve (NXDOMAIN) or
	// name in TLS SNI or an HTTP Host; they win over AllowDomains.
	DenyDomains []string `json:"denyDomains"`
	// AllowCIDRs are IPv4 destinations the sandbox may reach, private
	// ranges included (never another sandbox or the host itself).
	AllowCIDRs []string `json:"allowCidrs"`
	// DenyCIDRs are IPv4 destinations the sandbox never reaches; they win
	// over everything else.
	DenyCIDRs []string `json:"denyCidrs"`
	// Default is "allow" or "deny": what happens to destinations no entry
	// names. Default "deny" when AllowDomains or AllowCIDRs are given,
	// "allow" otherwise.
	Default string `json:"default,omitempty"`
}

// DeniedName is one name a sandbox's policy refused.
type DeniedName struct {
	Name string `json:"name"`
	// Reason is "dns" (the name's lookup got NXDOMAIN), "sni" or "host" (a
	// connection naming it in TLS SNI or an HTTP Host was refused).
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// NetworkStatus is the body of GET /v1/sandboxes/{id}/network and the
// answer to PUT.
type NetworkStatus struct {
	Policy NetworkPolicy `json:"policy"`
	// AllowHostCIDRs are the host's own addresses the sandbox may reach,
	// as created (not part of the replaceable policy).
	AllowHostCIDRs []string `json:"allowHostCidrs,omitempty"`
	// Address and Gateway are the sandbox's link while it runs.
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// Denied counts what the policy refused since the daemon started:
	// lookups answered NXDOMAIN, connections refused by name and packets
	// of new connections dropped (a retried SYN counts again).
	Denied int64 `json:"denied"`
	// LastDenied are the last names refused (at most 16), newest first.
	LastDenied []DeniedName `json:"lastDenied"`
}
