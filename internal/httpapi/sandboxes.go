package httpapi

import (
	"net/http"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/sandbox"
)

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	infos, err := s.opts.Manager.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.SandboxList{Sandboxes: make([]api.Sandbox, 0, len(infos))}
	for _, inf := range infos {
		out.Sandboxes = append(out.Sandboxes, toWire(inf))
	}
	writeJSON(w, http.StatusOK, out)
}

// ensureSandbox creates the sandbox with the given options if it does not
// exist (201) or returns the existing one (200), and makes sure it runs.
func (s *Server) ensureSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var opts api.SandboxOptions
	if e := decodeJSON(r, &opts, maxJSONBody, true); e != nil {
		writeAPIError(w, e)
		return
	}
	inf, created, err := s.opts.Manager.Ensure(r.Context(), id, fromWire(opts))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	out := toWire(inf)
	out.Created = created
	writeJSON(w, status, out)
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	inf, err := s.opts.Manager.Get(r.Context(), id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toWire(inf))
}

func (s *Server) destroySandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	if err := s.opts.Manager.Destroy(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func fromWire(o api.SandboxOptions) sandbox.Config {
	c := sandbox.Config{Image: o.Image, Env: o.Env, Labels: o.Labels, InstanceType: o.InstanceType,
		SleepAfter: time.Duration(o.SleepAfter) * time.Millisecond}
	if o.KeepAlive != nil {
		c.KeepAlive = *o.KeepAlive
	}
	if o.Limits != nil {
		c.Limits = sandbox.Limits{MemoryBytes: o.Limits.MemoryBytes, MilliCPU: o.Limits.MilliCPU, Pids: o.Limits.Pids,
			DiskBytes: o.Limits.DiskBytes}
	}
	if o.Network != nil {
		c.Network = sandbox.NetworkConfig{Mode: string(o.Network.Mode), AllowCIDRs: o.Network.AllowCIDRs}
	}
	return c
}

func toWire(inf sandbox.Info) api.Sandbox {
	var deadline *time.Time
	if !inf.IdleDeadline.IsZero() {
		d := inf.IdleDeadline.UTC()
		deadline = &d
	}
	return api.Sandbox{
		StatusChangedAt: inf.StatusChangedAt,
		InstanceType:    inf.Config.InstanceType,
		SleepAfter:      inf.Config.SleepAfter.Milliseconds(),
		KeepAlive:       inf.Config.KeepAlive,
		IdleDeadline:    deadline,
		ID:              inf.ID,
		Status:          api.SandboxStatus(inf.Status),
		StatusReason:    inf.StatusReason,
		Image:           inf.Image,
		ImageDigest:     inf.Config.ImageDigest,
		Runtime:         inf.Runtime,
		Labels:          inf.Config.Labels,
		Limits: api.Limits{
			MemoryBytes: inf.Config.Limits.MemoryBytes, MilliCPU: inf.Config.Limits.MilliCPU, Pids: inf.Config.Limits.Pids,
			DiskBytes: inf.Config.Limits.DiskBytes,
		},
		Network: api.NetworkInfo{
			Mode: api.NetworkMode(inf.Config.Network.Mode), AllowCIDRs: inf.Config.Network.AllowCIDRs,
			Address: inf.Address, Gateway: inf.Gateway,
		},
		CreatedAt:  inf.CreatedAt,
		LastUsedAt: inf.LastUsedAt,
	}
}
