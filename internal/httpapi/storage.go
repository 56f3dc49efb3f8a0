package httpapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/internal/bucket"
	"github.com/sandboxd/sandboxd/internal/sandbox"
	"github.com/sandboxd/sandboxd/internal/secret"
	"github.com/sandboxd/sandboxd/internal/tenant"
	"github.com/sandboxd/sandboxd/internal/volume"
)

// storageRoutes are the routes of bucket mounts and secrets
// (docs/storage.md).
func (s *Server) storageRoutes() []route {
	return []route{
		{pattern: "POST /v1/sandboxes/{id}/mounts", handler: s.mountBucket},
		{pattern: "GET /v1/sandboxes/{id}/mounts", handler: s.listMounts},
		{pattern: "DELETE /v1/sandboxes/{id}/mounts", handler: s.unmountBucket},
		{pattern: "GET /v1/secrets", handler: s.listSecrets},
		{pattern: "PUT /v1/secrets/{name}", handler: s.setSecret},
		{pattern: "DELETE /v1/secrets/{name}", handler: s.removeSecret},
		// Volume names are per tenant (scopeVolume).
		{pattern: "POST /v1/volumes", handler: s.createVolume},
		{pattern: "GET /v1/volumes", handler: s.listVolumes},
		{pattern: "DELETE /v1/volumes/{name}", handler: s.removeVolume},
	}
}

// maxSecretBody bounds a secret's body: MaxKeys values of MaxValueBytes.
const maxSecretBody = secret.MaxKeys*(secret.MaxValueBytes+256) + 1024

func (s *Server) mountBucket(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	var req api.MountRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	creds, e := s.mountCredentials(r, req)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	src := bucket.Source{Bucket: req.Bucket, Prefix: strings.Trim(req.Prefix, "/"), Endpoint: req.Endpoint, Region: req.Region, ReadOnly: req.ReadOnly}
	bm, err := s.opts.Manager.Mount(r.Context(), id, sandbox.MountRequest{Path: req.Path, Source: src, Creds: creds, Secret: req.Secret})
	if err != nil {
		s.writeError(w, r, storageError(err))
		return
	}
	writeJSON(w, http.StatusCreated, wireMount(bm))
}

// mountCredentials takes the request's credentials, or the named secret's.
func (s *Server) mountCredentials(r *http.Request, req api.MountRequest) (bucket.Credentials, *api.Error) {
	switch {
	case req.Credentials != nil && req.Secret != "":
		return bucket.Credentials{}, api.Errorf(api.CodeValidationFailed, "send credentials or the name of a secret, not both")
	case req.Credentials != nil:
		c := req.Credentials
		return bucket.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}, nil
	case req.Secret != "":
		if s.opts.Secrets == nil {
			return bucket.Credentials{}, api.Errorf(api.CodeSecretNotFound, "this daemon keeps no secrets")
		}
		name, e := scopeSecret(r, req.Secret)
		if e != nil {
			return bucket.Credentials{}, e
		}
		sec, err := s.opts.Secrets.Get(name)
		if err != nil {
			return bucket.Credentials{}, api.Errorf(api.CodeSecretNotFound, "no secret named %q", req.Secret)
		}
		v := sec.Values
		if v["AWS_ACCESS_KEY_ID"] == "" || v["AWS_SECRET_ACCESS_KEY"] == "" {
			return bucket.Credentials{}, api.Errorf(api.CodeValidationFailed, "secret %q has no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", req.Secret)
		}
		return bucket.Credentials{AccessKeyID: v["AWS_ACCESS_KEY_ID"], SecretAccessKey: v["AWS_SECRET_ACCESS_KEY"], SessionToken: v["AWS_SESSION_TOKEN"]}, nil
	}
	return bucket.Credentials{}, api.Errorf(api.CodeValidationFailed, "credentials are required: send credentials or the name of a secret")
}

func (s *Server) listMounts(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	list, err := s.opts.Manager.Mounts(r.Context(), id)
	if err != nil {
		s.writeError(w, r, storageError(err))
		return
	}
	out := api.MountList{Mounts: []api.Mount{}}
	for _, bm := range list {
		out.Mounts = append(out.Mounts, wireMount(bm))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) unmountBucket(w http.ResponseWriter, r *http.Request) {
	id, ok := sandboxID(w, r)
	if !ok {
		return
	}
	p := r.URL.Query().Get("path")
	if err := sandbox.ValidateMountPath(p); err != nil {
		s.writeError(w, r, storageError(err))
		return
	}
	if err := s.opts.Manager.Unmount(r.Context(), id, p); err != nil {
		s.writeError(w, r, storageError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func wireMount(bm sandbox.BucketMount) api.Mount {
	return api.Mount{
		Path: bm.Path, Bucket: bm.Source.Bucket, Prefix: bm.Source.Prefix, Endpoint: bm.Source.Endpoint,
		Region: bm.Source.Region, ReadOnly: bm.Source.ReadOnly, Secret: localFlat(bm.Secret),
		Status: bm.Status, Reason: bm.Reason, CreatedAt: bm.CreatedAt,
	}
}

// storageError is err, classified by classifyStorage when it is a storage
// error.
func storageError(err error) error {
	if e := classifyStorage(err); e != nil {
		return e
	}
	return err
}

// classifyStorage gives the storage domain's errors their codes; nil for
// others.
func classifyStorage(err error) *api.Error {
	codes := []struct {
		target error
		code   api.Code
	}{
		{sandbox.ErrMountPathInvalid, api.CodeMountPathInvalid},
		{sandbox.ErrMountPathInUse, api.CodeMountPathInUse},
		{sandbox.ErrMountNotFound, api.CodeMountNotFound},
		{sandbox.ErrBucketUnreachable, api.CodeBucketUnreachable},
		{sandbox.ErrBucketAuth, api.CodeBucketAuthFailed},
		{sandbox.ErrBucketNotFound, api.CodeBucketNotFound},
		{bucket.ErrEndpointForbidden, api.CodeBucketEndpointForbidden},
		{sandbox.ErrLimit, api.CodeResourceExhausted},
		{secret.ErrNotFound, api.CodeSecretNotFound},
		{secret.ErrInvalid, api.CodeValidationFailed},
		{secret.ErrLimit, api.CodeResourceExhausted},
		{sandbox.ErrVolumeNotFound, api.CodeVolumeNotFound},
		{volume.ErrNotFound, api.CodeVolumeNotFound},
		{volume.ErrExists, api.CodeVolumeExists},
		{volume.ErrInvalid, api.CodeValidationFailed},
		{volume.ErrLimit, api.CodeResourceExhausted},
	}
	for _, c := range codes {
		if errors.Is(err, c.target) {
			return &api.Error{Code: c.code, Message: err.Error()}
		}
	}
	return nil
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	out := api.SecretList{Secrets: []api.Secret{}}
	if s.opts.Secrets != nil {
		list, err := s.opts.Secrets.List()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		caller := callerOf(r)
		for _, sec := range list {
			if t, name := splitFlat(sec.Name); caller.Sees(t) {
				out.Secrets = append(out.Secrets, api.Secret{Name: name, Keys: sec.Keys(), UpdatedAt: sec.UpdatedAt})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) setSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := secret.ValidateName(name); err != nil {
		s.writeError(w, r, storageError(err))
		return
	}
	var req api.SecretRequest
	if e := s.decodeJSON(w, r, &req, maxSecretBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	if s.opts.Secrets == nil {
		writeAPIError(w, api.Errorf(api.CodeInternal, "this daemon keeps no secrets"))
		return
	}
	scoped, e := scopeSecret(r, name)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	if err := s.opts.Secrets.Set(scoped, req.Values, time.Now()); err != nil {
		s.writeError(w, r, storageError(err))
		return
	}
	s.log.Info("secret set", "name", name, "keys", len(req.Values))
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) removeSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if s.opts.Secrets == nil {
		writeAPIError(w, api.Errorf(api.CodeSecretNotFound, "no secret named %q", name))
		return
	}
	scoped, e := scopeSecret(r, name)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	if err := s.opts.Secrets.Remove(scoped); err != nil {
		s.writeError(w, r, storageError(err))
		return
	}
	s.log.Info("secret removed", "name", name)
	w.WriteHeader(http.StatusNoContent)
}

func wireVolumeMounts(vols []sandbox.VolumeMount) []api.VolumeMount {
	var out []api.VolumeMount
	for _, v := range vols {
		out = append(out, api.VolumeMount{Name: localFlat(v.Name), Path: v.Path, ReadOnly: v.ReadOnly})
	}
	return out
}

// scopeVolume scopes a volume name: a tenant's volumes are its own, and
// another tenant's name is one nobody has (VOLUME_NOT_FOUND).
func scopeVolume(r *http.Request, name string) (string, *api.Error) {
	if err := volume.ValidateName(name); err != nil {
		return "", api.Errorf(api.CodeValidationFailed, "%s", err.Error())
	}
	return scopeFlat(r, name, volume.ValidateName, api.CodeValidationFailed)
}

// scopeVolumeMounts scopes the volumes a new sandbox names.
func scopeVolumeMounts(r *http.Request, vols []sandbox.VolumeMount) *api.Error {
	for i := range vols {
		scoped, e := scopeVolume(r, vols[i].Name)
		if e != nil {
			return e
		}
		vols[i].Name = scoped
	}
	return nil
}

func (s *Server) createVolume(w http.ResponseWriter, r *http.Request) {
	var req api.VolumeRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	if s.opts.Volumes == nil {
		writeAPIError(w, api.Errorf(api.CodeInternal, "this daemon keeps no volumes"))
		return
	}
	name, e := scopeVolume(r, req.Name)
	if e != nil {
		writeAPIError(w, e)
		return
	}
	v, err := s.opts.Volumes.Create(r.Context(), name, req.SizeBytes, time.Now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("volume created", "name", v.Name, "size", v.SizeBytes)
	writeJSON(w, http.StatusCreated, api.Volume{Name: localFlat(v.Name), SizeBytes: v.SizeBytes, Sandboxes: []string{}, CreatedAt: v.CreatedAt})
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request) {
	out := api.VolumeList{Volumes: []api.Volume{}}
	if s.opts.Volumes != nil {
		list, err := s.opts.Volumes.List()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		caller := callerOf(r)
		for _, v := range list {
			t, name := splitFlat(v.Name)
			if !caller.Sees(t) {
				continue
			}
			// Only the volume's own tenant's sandboxes can name it.
			users := []string{}
			for _, id := range s.opts.Manager.VolumeUsers(v.Name) {
				users = append(users, tenant.Local(id))
			}
			out.Volumes = append(out.Volumes, api.Volume{Name: name, Tenant: tenant.Display(t), SizeBytes: v.SizeBytes, UsedBytes: v.UsedBytes, Sandboxes: users, CreatedAt: v.CreatedAt})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) removeVolume(w http.ResponseWriter, r *http.Request) {
	name, e := scopeVolume(r, r.PathValue("name"))
	if e != nil {
		writeAPIError(w, e)
		return
	}
	if s.opts.Volumes == nil || !s.opts.Volumes.Exists(name) {
		writeAPIError(w, api.Errorf(api.CodeVolumeNotFound, "no volume named %q", name))
		return
	}
	// A sandbox that names the volume mounts it whenever it runs, so the
	// volume is in use for as long as the sandbox exists. (A sandbox being
	// created with it at this moment may slip past this check and fail to
	// start with VOLUME_NOT_FOUND.)
	if users := s.opts.Manager.VolumeUsers(name); len(users) > 0 {
		writeAPIError(w, api.Errorf(api.CodeVolumeInUse, "volume %s is used by %s", name, strings.Join(users, ", ")))
		return
	}
	if err := s.opts.Volumes.Remove(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("volume removed", "name", name)
	w.WriteHeader(http.StatusNoContent)
}
