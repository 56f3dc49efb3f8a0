package httpapi

import (
	"net/http"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// Bounds of a quota field: far above any host, low enough that sums of
// them cannot overflow.
const (
	maxQuotaCount  = 1 << 20
	maxQuotaMemory = 1 << 50
)

func (s *Server) keys(w http.ResponseWriter) (*tenant.Keys, bool) {
	if s.opts.Keys == nil {
		writeAPIError(w, api.Errorf(api.CodeNotFound, "this daemon has no API keys"))
		return nil, false
	}
	return s.opts.Keys, true
}

// CheckQuotas checks a key's quotas (the gateway's key routes use it too).
func CheckQuotas(q api.Quotas) *api.Error {
	for _, f := range []struct {
		name string
		v    int64
		max  int64
	}{{"maxSandboxes", int64(q.MaxSandboxes), maxQuotaCount}, {"maxRunning", int64(q.MaxRunning), maxQuotaCount},
		{"maxMemory", q.MaxMemory, maxQuotaMemory}} {
		if f.v < 0 || f.v > f.max {
			return api.Errorf(api.CodeValidationFailed, "quotas.%s is %d; want 0 (unlimited) to %d", f.name, f.v, f.max)
		}
	}
	return nil
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	var req api.KeyCreateRequest
	if e := s.decodeJSON(w, r, &req, 4<<10, false); e != nil {
		writeAPIError(w, e)
		return
	}
	if e := CheckQuotas(req.Quotas); e != nil {
		writeAPIError(w, e)
		return
	}
	if req.Admin && req.Quotas != (api.Quotas{}) {
		writeAPIError(w, api.Errorf(api.CodeValidationFailed, "an admin key has no quotas"))
		return
	}
	k, secret, err := keys.Create(r.Context(), req.Name, req.Admin, quotaFromWire(req.Quotas))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("API key created", "name", k.Name, "admin", k.Admin)
	writeJSON(w, http.StatusCreated, api.KeyCreated{Name: k.Name, Key: secret, Quotas: quotaToWire(k.Quota), Admin: k.Admin})
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	list, err := keys.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.KeyList{Keys: make([]api.Key, 0, len(list))}
	for _, k := range list {
		wk := api.Key{Name: k.Name, Admin: k.Admin, Quotas: quotaToWire(k.Quota), CreatedAt: k.CreatedAt, RotatedAt: k.RotatedAt}
		if !k.Admin {
			u := s.opts.Manager.Usage(k.Name)
			wk.Usage = api.Usage{Sandboxes: u.Sandboxes, Running: u.Running, Memory: u.Memory}
		}
		out.Keys = append(out.Keys, wk)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) removeKey(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := keys.Remove(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("API key removed", "name", name)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request) {
	keys, ok := s.keys(w)
	if !ok {
		return
	}
	k, secret, err := keys.Rotate(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("API key rotated", "name", k.Name)
	writeJSON(w, http.StatusOK, api.KeyCreated{Name: k.Name, Key: secret, Quotas: quotaToWire(k.Quota), Admin: k.Admin})
}

func quotaFromWire(q api.Quotas) tenant.Quota {
	return tenant.Quota{MaxSandboxes: q.MaxSandboxes, MaxRunning: q.MaxRunning, MaxMemory: q.MaxMemory}
}

func quotaToWire(q tenant.Quota) api.Quotas {
	return api.Quotas{MaxSandboxes: q.MaxSandboxes, MaxRunning: q.MaxRunning, MaxMemory: q.MaxMemory}
}
