package httpapi

import (
	"net/http"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

// EgressReporter says what a sandbox's egress policy refused: a count and
// the last names, newest first. With cached, the count may be a few
// seconds old rather than cost a read of the table's counters.
type EgressReporter interface {
	Denied(sandboxID string, cached bool) (count int64, last []api.DeniedName)
}

// getNetwork serves GET /v1/sandboxes/{id}/network: the sandbox's policy
// and what it refused. It does not create unknown sandboxes.
func (s *Server) getNetwork(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	inf, err := s.opts.Manager.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.networkStatus(inf, false))
}

// setNetwork serves PUT /v1/sandboxes/{id}/network: it replaces the
// sandbox's egress policy, running or not.
func (s *Server) setNetwork(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var p api.NetworkPolicy
	if e := s.decodeJSON(w, r, &p, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	inf, err := s.opts.Manager.SetNetworkPolicy(r.Context(), id, sandbox.NetworkConfig{
		Mode: string(p.Mode), AllowDomains: p.AllowDomains, DenyDomains: p.DenyDomains,
		AllowCIDRs: p.AllowCIDRs, DenyCIDRs: p.DenyCIDRs, Default: p.Default,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The answer must not wait for a read of the counters: the policy
	// change is what the caller is timing.
	writeJSON(w, http.StatusOK, s.networkStatus(inf, true))
}

func (s *Server) networkStatus(inf sandbox.Info, cached bool) api.NetworkStatus {
	n := inf.Config.Network
	st := api.NetworkStatus{
		Policy: api.NetworkPolicy{
			Mode: api.NetworkMode(n.Mode), AllowDomains: orEmpty(n.AllowDomains), DenyDomains: orEmpty(n.DenyDomains),
			AllowCIDRs: orEmpty(n.AllowCIDRs), DenyCIDRs: orEmpty(n.DenyCIDRs), Default: defaultOf(n),
		},
		AllowHostCIDRs: n.AllowHostCIDRs, Address: inf.Address, Gateway: inf.Gateway,
		LastDenied: []api.DeniedName{},
	}
	if s.opts.Egress != nil {
		st.Denied, st.LastDenied = s.opts.Egress.Denied(inf.ID, cached)
		if st.LastDenied == nil {
			st.LastDenied = []api.DeniedName{}
		}
	}
	return st
}

// defaultOf is the policy's default as the wire says it: a sandbox
// created before policies existed has none stored, which means allow.
func defaultOf(n sandbox.NetworkConfig) string {
	if n.Mode != sandbox.NetworkInternet {
		return ""
	}
	if n.Default == "" {
		return api.EgressAllow
	}
	return n.Default
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
