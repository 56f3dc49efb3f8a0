package e2b

import (
	"encoding/json"
	"net/http"
	"net/netip"

	"github.com/sandboxd/sandboxd/api"
)

// allTraffic is E2B's ALL_TRAFFIC selector.
const allTraffic = "0.0.0.0/0"

// maxEgressEntries bounds allowOut and denyOut together (sandboxd's own
// policy bound).
const maxEgressEntries = 256

// egressRequest is E2B's egress part of a network configuration, at
// create and in updateNetwork.
type egressRequest struct {
	AllowOut    []string        `json:"allowOut"`
	DenyOut     []string        `json:"denyOut"`
	Rules       json.RawMessage `json:"rules"`
	EgressProxy json.RawMessage `json:"egressProxy"`
}

func (e egressRequest) empty() bool {
	return len(e.AllowOut) == 0 && len(e.DenyOut) == 0
}

// policy maps E2B's allowOut/denyOut (CIDRs, addresses or domain names;
// denyOut: [ALL_TRAFFIC] closes everything else) onto sandboxd's egress
// policy (docs/network.md): addresses become /32 CIDRs, names domains,
// and the default is deny exactly when denyOut holds ALL_TRAFFIC. Where
// both lists name the same thing, E2B lets allow win; sandboxd lets deny.
func (e egressRequest) policy() (api.NetworkPolicy, error) {
	if len(e.Rules) > 0 && string(e.Rules) != "null" && string(e.Rules) != "{}" {
		return api.NetworkPolicy{}, controlErrorf(http.StatusBadRequest, "network rules are not supported by sandboxd's E2B layer; use allowOut and denyOut")
	}
	if len(e.EgressProxy) > 0 && string(e.EgressProxy) != "null" {
		return api.NetworkPolicy{}, controlErrorf(http.StatusBadRequest, "an egress proxy is not supported by sandboxd's E2B layer")
	}
	if len(e.AllowOut)+len(e.DenyOut) > maxEgressEntries {
		return api.NetworkPolicy{}, controlErrorf(http.StatusBadRequest, "at most %d allowOut and denyOut entries", maxEgressEntries)
	}
	p := api.NetworkPolicy{Mode: api.NetworkInternet, Default: "allow",
		AllowDomains: []string{}, DenyDomains: []string{}, AllowCIDRs: []string{}, DenyCIDRs: []string{}}
	for _, d := range e.DenyOut {
		switch cidr, ok := asCIDR(d); {
		case d == allTraffic:
			p.Default = "deny"
		case ok:
			p.DenyCIDRs = append(p.DenyCIDRs, cidr)
		default:
			p.DenyDomains = append(p.DenyDomains, d)
		}
	}
	for _, a := range e.AllowOut {
		switch cidr, ok := asCIDR(a); {
		case a == allTraffic:
			p.Default = "allow"
		case ok:
			p.AllowCIDRs = append(p.AllowCIDRs, cidr)
		default:
			p.AllowDomains = append(p.AllowDomains, a)
		}
	}
	return p, nil
}

// asCIDR reads an address or a prefix; an address is its /32.
func asCIDR(s string) (string, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.String(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String(), true
	}
	return "", false
}

// networkOptions are the create options of an egress request.
func (e egressRequest) networkOptions() (*api.NetworkOptions, error) {
	p, err := e.policy()
	if err != nil {
		return nil, err
	}
	return &api.NetworkOptions{Mode: p.Mode, AllowDomains: p.AllowDomains, DenyDomains: p.DenyDomains,
		AllowCIDRs: p.AllowCIDRs, DenyCIDRs: p.DenyCIDRs, Default: p.Default}, nil
}

// updateNetwork serves PUT /sandboxes/{id}/network: the egress policy is
// replaced whole, as on E2B (omitted fields are cleared).
func (s *Server) updateNetwork(w http.ResponseWriter, r *http.Request, id string) error {
	var req struct {
		egressRequest
		AllowInternetAccess *bool `json:"allow_internet_access"`
	}
	if err := s.decodeControl(w, r, &req); err != nil {
		return err
	}
	if _, _, err := s.lookup(r.Context(), id); err != nil {
		return err
	}
	if req.AllowInternetAccess != nil && !*req.AllowInternetAccess {
		return controlErrorf(http.StatusBadRequest, "internet access cannot be turned off after creation in sandboxd; use denyOut: [ALL_TRAFFIC]")
	}
	p, err := req.policy()
	if err != nil {
		return err
	}
	if err := s.up.call(r.Context(), http.MethodPut, sandboxPath(id, "network"), p, nil); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
