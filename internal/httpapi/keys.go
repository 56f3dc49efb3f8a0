package httpapi

import (
	"net/http"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

func (s *Server) keys(w http.ResponseWriter) (*tenant.Keys, bool) {
	if s.opts.Keys == nil {
		writeAPIError(w, api.Errorf(api.CodeNotFound, "this daemon has no API keys"))
		return nil, false
	}
	return s.opts.Keys, true
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
	q, e := tenant.QuotaOfRequest(req)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	k, secret, err := keys.Create(r.Context(), req.Name, req.Admin, q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("API key created", "name", k.Name, "admin", k.Admin)
	writeJSON(w, http.StatusCreated, k.Created(secret))
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
		wk := k.Wire()
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
	writeJSON(w, http.StatusOK, k.Created(secret))
}
