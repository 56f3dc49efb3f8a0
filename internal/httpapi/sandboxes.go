package httpapi

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/tenant"
)

// listSandboxes serves GET /v1/sandboxes: the caller's sandboxes (an
// admin's: every tenant's, or ?tenant=NAME's), filtered by ?label=k=v
// (repeatable, all must match) and ?status=S, a page of ?limit=N at a
// time, continued with ?pageToken= from the previous page (list.go).
//
// The answer is an api.SandboxList, written a sandbox at a time as the
// manager finds them (writeSandboxList) rather than gathered first: with
// thousands of sandboxes the daemon's heap is large, and what each call
// allocates is paid in page faults (bench/results/scale.txt).
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q, e := parseListQuery(r)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	if err := writeSandboxList(w, func(each func(sandbox.Info)) bool {
		return s.opts.Manager.Page(r.Context(), q, each)
	}); err != nil {
		s.log.Debug("writing the list of sandboxes", "err", err)
	}
}

// writeSandboxList answers 200 with the api.SandboxList of the sandboxes
// page gives each, in its order, and the token of the page after when
// page reports more. It encodes one row at a time into one listRow,
// borrowed for the page (a row is 1 KB); the bytes differ from json.Marshal of the whole list only by
// a newline after each row.
func writeSandboxList(w http.ResponseWriter, page func(each func(sandbox.Info)) (more bool)) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	row := borrowListRow()
	defer row.giveBack()
	var (
		last string
		err  error
	)
	_, err = io.WriteString(w, `{"sandboxes":[`)
	more := page(func(inf sandbox.Info) {
		if err != nil {
			return
		}
		if last != "" {
			_, err = io.WriteString(w, ",")
		}
		row.setInfo(inf)
		if err == nil {
			err = enc.Encode(row)
		}
		last = inf.ID
	})
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, "]"); err != nil {
		return err
	}
	if more && last != "" {
		if _, err := io.WriteString(w, `,"nextPageToken":`); err != nil {
			return err
		}
		if err := enc.Encode(encodePageToken(last)); err != nil {
			return err
		}
	}
	_, err = io.WriteString(w, "}\n")
	return err
}

// ensureSandbox creates the sandbox with the given options if it does not
// exist (201) or returns the existing one (200), and makes sure it runs.
func (s *Server) ensureSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var body sandboxOptionsBody
	if e := s.decodeJSON(w, r, &body, maxJSONBody, true); e != nil {
		writeAPIError(w, e)
		return
	}
	opts, e := body.options()
	if e != nil {
		writeAPIError(w, e)
		return
	}
	cfg := fromWire(opts)
	if e := scopeVolumeMounts(r, cfg.Volumes); e != nil {
		writeAPIError(w, e)
		return
	}
	if cfg.Image != "" && s.opts.Images != nil {
		var err error
		if cfg.Image, _, err = scopeImage(r, s.opts.Images, cfg.Image); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if cfg.Snapshot != "" {
		var e *api.Error
		if cfg.Snapshot, e = scopeSnapshot(r, cfg.Snapshot); e != nil {
			writeAPIError(w, e)
			return
		}
	}
	inf, created, err := s.opts.Manager.Ensure(r.Context(), id, cfg)
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

// sandboxOptionsBody is api.SandboxOptions as the daemon decodes it: its
// limits tell an absent field (the default) from an explicit 0, which is
// refused rather than taken for the default ("pids": 0 must not read as
// "no limit" to the caller and "1024" to the daemon). diskBytes 0 keeps
// its documented meaning, no quota.
type sandboxOptionsBody struct {
	api.SandboxOptions
	Limits *limitsBody `json:"limits,omitempty"`
}

type limitsBody struct {
	MemoryBytes *int64 `json:"memoryBytes"`
	MilliCPU    *int64 `json:"milliCpu"`
	Pids        *int64 `json:"pids"`
	DiskBytes   int64  `json:"diskBytes"`
}

func (b sandboxOptionsBody) options() (api.SandboxOptions, *api.Error) {
	o := b.SandboxOptions
	if b.Limits == nil {
		return o, nil
	}
	o.Limits = &api.Limits{DiskBytes: b.Limits.DiskBytes}
	for _, f := range []struct {
		name string
		v    *int64
		dst  *int64
	}{
		{"memoryBytes", b.Limits.MemoryBytes, &o.Limits.MemoryBytes},
		{"milliCpu", b.Limits.MilliCPU, &o.Limits.MilliCPU},
		{"pids", b.Limits.Pids, &o.Limits.Pids},
	} {
		if f.v == nil {
			continue
		}
		if *f.v == 0 {
			return o, api.Errorf(api.CodeValidationFailed, "limits.%s is 0; leave it out for the default", f.name)
		}
		*f.dst = *f.v
	}
	return o, nil
}

func fromWire(o api.SandboxOptions) sandbox.Config {
	c := sandbox.Config{Image: o.Image, Env: o.Env, Labels: o.Labels, InstanceType: o.InstanceType,
		Runtime: o.Runtime, SleepAfter: time.Duration(o.SleepAfter) * time.Millisecond, Snapshot: o.FromSnapshot}
	if o.KeepAlive != nil {
		c.KeepAlive = *o.KeepAlive
	}
	if o.Limits != nil {
		c.Limits = sandbox.Limits{MemoryBytes: o.Limits.MemoryBytes, MilliCPU: o.Limits.MilliCPU, Pids: o.Limits.Pids,
			DiskBytes: o.Limits.DiskBytes}
	}
	for _, v := range o.Volumes {
		c.Volumes = append(c.Volumes, sandbox.VolumeMount{Name: v.Name, Path: v.Path, ReadOnly: v.ReadOnly})
	}
	if o.Network != nil {
		c.Network = sandbox.NetworkConfig{Mode: string(o.Network.Mode), AllowCIDRs: o.Network.AllowCIDRs,
			AllowHostCIDRs: o.Network.AllowHostCIDRs, AllowDomains: o.Network.AllowDomains,
			DenyDomains: o.Network.DenyDomains, DenyCIDRs: o.Network.DenyCIDRs, Default: o.Network.Default}
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
		ID:              tenant.Local(inf.ID),
		Tenant:          wireTenant(inf.ID),
		Status:          api.SandboxStatus(inf.Status),
		StatusReason:    inf.StatusReason,
		Image:           localImage(inf.ID, inf.Image),
		ImageDigest:     inf.Config.ImageDigest,
		Runtime:         inf.Runtime,
		FromSnapshot:    localFlat(inf.Config.Snapshot),
		Volumes:         wireVolumeMounts(inf.Config.Volumes),
		Labels:          inf.Config.Labels,
		Limits: api.Limits{
			MemoryBytes: inf.Config.Limits.MemoryBytes, MilliCPU: inf.Config.Limits.MilliCPU, Pids: inf.Config.Limits.Pids,
			DiskBytes: inf.Config.Limits.DiskBytes,
		},
		Network: api.NetworkInfo{
			Mode: api.NetworkMode(inf.Config.Network.Mode), AllowCIDRs: inf.Config.Network.AllowCIDRs,
			AllowHostCIDRs: inf.Config.Network.AllowHostCIDRs, Address: inf.Address, Gateway: inf.Gateway,
			AllowDomains: inf.Config.Network.AllowDomains, DenyDomains: inf.Config.Network.DenyDomains,
			DenyCIDRs: inf.Config.Network.DenyCIDRs, Default: defaultOf(inf.Config.Network),
		},
		CreatedAt:  inf.CreatedAt,
		LastUsedAt: inf.LastUsedAt,
		Isolation: api.Isolation{
			Runtime: inf.Runtime, UserNamespace: inf.HostUIDBase != 0, HostUIDBase: inf.HostUIDBase,
		},
	}
}

// localImage is a sandbox's image name as its tenant calls it: without the
// tenant's prefix when the image is the tenant's own.
func localImage(id, img string) string {
	if ns, name := image.SplitScoped(img); ns != "" && ns == tenant.Of(id) {
		return name
	}
	return img
}
