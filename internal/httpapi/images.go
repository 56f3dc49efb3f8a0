package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/api/fullduplex"
	"github.com/sandboxd/sandboxd/api/sse"
	"github.com/sandboxd/sandboxd/internal/image"
	"github.com/sandboxd/sandboxd/internal/inflight"
)

// classifyImage maps the image domain's errors to wire errors; nil for
// errors of other domains.
func classifyImage(err error) *api.Error {
	msg := err.Error()
	codes := []struct {
		target error
		code   api.Code
	}{
		{image.ErrNotFound, api.CodeImageNotFound},
		{image.ErrInvalidName, api.CodeInvalidImageName},
		{image.ErrInvalid, api.CodeInvalidImage},
		{image.ErrInUse, api.CodeImageInUse},
		{image.ErrTooLarge, api.CodeImageTooLarge},
		{image.ErrRegistryDenied, api.CodeRegistryDenied},
		{image.ErrRegistry, api.CodeRegistryUnavailable},
		{image.ErrBuildFailed, api.CodeImageBuildFailed},
		{image.ErrBuilderMissing, api.CodeBuilderUnavailable},
		{inflight.ErrTenantBusy, api.CodeTooManyImageJobs},
		{inflight.ErrBusy, api.CodeImageJobsBusy},
	}
	for _, c := range codes {
		if errors.Is(err, c.target) {
			return &api.Error{Code: c.code, Message: msg}
		}
	}
	return nil
}

// imageJob bounds next, an import, pull or build, by api.MaxImageJobsPerTenant
// of the caller's tenant and api.MaxImageJobs in all: each may spool up to
// --max-image-size to disk and hold a connection for minutes, so a tenant
// must not be able to start them without end. Past the bounds the call is
// refused at once.
func (s *Server) imageJob(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, err := s.imageJobs.Acquire(callerOf(r).Namespace())
		if err != nil {
			// Answer without reading the upload: net/http would read up
			// to 256 KiB of it first, which a stalled upload never sends.
			w.Header().Set("Connection", "close")
			s.writeError(w, r, fmt.Errorf("%w: at most %d imports, pulls and builds of a tenant and %d in all at once", err, api.MaxImageJobsPerTenant, api.MaxImageJobs))
			return
		}
		defer release()
		next(w, r)
	}
}

func (s *Server) images(w http.ResponseWriter) (*image.Store, bool) {
	if s.opts.Images == nil {
		writeAPIError(w, api.Errorf(api.CodeNotFound, "this daemon has no image store"))
		return nil, false
	}
	return s.opts.Images, true
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	st, ok := s.images(w)
	if !ok {
		return
	}
	imgs, err := st.List(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := api.ImageList{Images: make([]api.Image, 0, len(imgs))}
	for _, img := range imgs {
		if wire, ok := imageForCaller(r, img); ok {
			out.Images = append(out.Images, wire)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// Images per tenant (docs/tenants.md): a tenant's image names are its own
// (image.Scoped, the image store's scopeName), and the admin namespace's
// images are shared with every tenant. scopeImage is the one call a route
// makes to turn an image name from a URL or body into the store's name.

// scopeImage returns the store's name of the image the caller means by
// name, and whether it is a shared one; another tenant's image is
// IMAGE_NOT_FOUND, as is an image nobody has.
func scopeImage(r *http.Request, st *image.Store, name string) (string, bool, error) {
	return st.Find(callerOf(r).Namespace(), name)
}

// newImageName is the store's name for an image the caller imports,
// pulls or builds as name ("": the name the image gives).
func newImageName(r *http.Request, name string) (string, error) {
	if name != "" {
		if err := image.ValidateName(name); err != nil {
			return "", err
		}
	}
	return image.Scoped(callerOf(r).Namespace(), name), nil
}

// imageForCaller is img as the caller sees it: with the names it knows it
// by; false when it names none (another tenant's image).
func imageForCaller(r *http.Request, img image.Image) (api.Image, bool) {
	ns := callerOf(r).Namespace()
	own, shared := image.Visible(ns, img.Names)
	if ns != "" && len(own)+len(shared) == 0 {
		return api.Image{}, false
	}
	img.Names = append(own, shared...)
	wire := imageToWire(img)
	wire.Shared = ns != "" && len(own) == 0
	return wire, true
}

func (s *Server) inspectImage(w http.ResponseWriter, r *http.Request) {
	st, ok := s.images(w)
	if !ok {
		return
	}
	key, _, err := scopeImage(r, st, r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	img, err := st.Inspect(r.Context(), key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	wire, _ := imageForCaller(r, img)
	writeJSON(w, http.StatusOK, wire)
}

// removeImage removes an image name. A tenant removes its own names only:
// a shared image is an admin's to remove (FORBIDDEN: the tenant sees it),
// and a digest, which would remove every name of the image, other
// tenants' included, is refused.
func (s *Server) removeImage(w http.ResponseWriter, r *http.Request) {
	st, ok := s.images(w)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if callerOf(r).Namespace() != "" && image.IsDigest(name) {
		writeAPIError(w, api.Errorf(api.CodeInvalidImageName, "remove a tenant's image by its name, not by digest"))
		return
	}
	key, shared, err := scopeImage(r, st, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if shared {
		writeAPIError(w, api.Errorf(api.CodeForbidden, "image %q is shared by every tenant; an admin key removes it", name))
		return
	}
	if err := st.Remove(r.Context(), key); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// importImage reads a docker save tarball or an OCI layout tar from the
// body (bounded by the store's image size limit) and imports it.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	st, ok := s.images(w)
	if !ok {
		return
	}
	name, err := newImageName(r, r.URL.Query().Get(api.ImportParamName))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	img, err := st.ImportStream(r.Context(), r.Body, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	wire, _ := imageForCaller(r, img)
	writeJSON(w, http.StatusCreated, wire)
}

func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) {
	st, ok := s.images(w)
	if !ok {
		return
	}
	var req api.ImagePullRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, false); e != nil {
		writeAPIError(w, e)
		return
	}
	name, err := newImageName(r, req.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	img, err := st.Pull(r.Context(), req.Ref, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	wire, _ := imageForCaller(r, img)
	writeJSON(w, http.StatusCreated, wire)
}

// buildImage builds the Dockerfile of the tar context in the body and
// streams the build's log as SSE, ending with complete or error.
func (s *Server) buildImage(w http.ResponseWriter, r *http.Request) {
	st, ok := s.images(w)
	if !ok {
		return
	}
	q := r.URL.Query()
	args := map[string]string{}
	for _, kv := range q[api.BuildParamArg] {
		k, v, _ := strings.Cut(kv, "=")
		args[k] = v
	}
	local := q.Get(api.BuildParamName)
	if err := image.ValidateName(local); err != nil {
		s.writeError(w, r, err)
		return
	}
	name, _ := newImageName(r, local)
	s.streamBuild(w, r, func(ctx context.Context, log image.LogFunc) (image.Image, error) {
		return st.Build(ctx, image.BuildOptions{
			Name: name, Context: r.Body, Dockerfile: q.Get(api.BuildParamDockerfile), Args: args, Log: log,
		})
	})
}

func (s *Server) buildBaseImage(w http.ResponseWriter, r *http.Request) {
	st, ok := s.images(w)
	if !ok {
		return
	}
	var req api.ImageBuildBaseRequest
	if e := s.decodeJSON(w, r, &req, maxJSONBody, true); e != nil {
		writeAPIError(w, e)
		return
	}
	s.streamBuild(w, r, func(ctx context.Context, log image.LogFunc) (image.Image, error) {
		return st.BuildBase(ctx, image.BaseOptions{Rebuild: req.Rebuild, Log: log})
	})
}

// buildKeepalive is the longest a build stream stays silent (a variable
// for a test).
var buildKeepalive = 15 * time.Second

// streamBuild runs build, streaming its log lines as events. A client that
// goes away cancels the build. The stream always ends with one complete
// or error event, and then the connection closes.
func (s *Server) streamBuild(w http.ResponseWriter, r *http.Request, build func(context.Context, image.LogFunc) (image.Image, error)) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// The build context is read from the body while the log streams.
	if err := fullduplex.Enable(w); err != nil {
		s.log.Debug("full duplex", "err", err)
	}
	// Whether the build reads the body to its end is not known when the
	// headers go out: a refused build (build args, no buildah) reads none
	// of it, and the tar reader stops at the end marker, before the
	// record padding of GNU tar or Python's tarfile. With full duplex, the
	// HTTP/1 server's own read of such a rest after the handler panics on
	// the connection (golang/go#68560), and fullduplex.EndBody would hold
	// the image-job slot while a stalled upload sends nothing. So the
	// caller reads the whole answer and the server then closes: one
	// connection a build.
	w.Header().Set("Connection", "close")
	sw := sse.NewWriter(w)
	w.WriteHeader(http.StatusOK)
	send := func(ev api.BuildEvent) {
		if err := sw.Send(ev.Type, ev); err != nil {
			cancel() // the client is gone: stop the build
		}
	}
	// The keepalive writes to w: it has stopped before the handler returns
	// (defers run last first: done closes, then the wait).
	var keepalive sync.WaitGroup
	defer keepalive.Wait()
	done := make(chan struct{})
	defer close(done)
	keepalive.Go(func() {
		t := time.NewTicker(buildKeepalive)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if sw.Keepalive() != nil {
					cancel()
				}
			}
		}
	})
	sw.Keepalive() // headers out now: builds may be silent for a while
	img, err := build(ctx, func(stream, line string) {
		send(api.BuildEvent{Type: api.BuildEventLog, Stream: stream, Data: line})
	})
	if err != nil {
		e := s.classify(err)
		s.logFailure(r.Context(), "image build failed", e.Code, err)
		send(api.BuildEvent{Type: api.BuildEventError, Code: e.Code, Message: e.Message})
		return
	}
	wire, _ := imageForCaller(r, img)
	send(api.BuildEvent{Type: api.BuildEventComplete, Image: &wire})
}

func imageToWire(img image.Image) api.Image {
	out := api.Image{
		Names: img.Names, Digest: img.Digest, ManifestDigest: img.ManifestDigest, Size: img.Size,
		BlobSize: img.BlobSize, Source: img.Source, OS: img.OS, Architecture: img.Architecture,
		Config: api.ImageConfig{
			Env: img.Config.Env, WorkingDir: img.Config.WorkingDir, User: img.Config.User,
			Entrypoint: img.Config.Entrypoint, Cmd: img.Config.Cmd, ExposedPorts: img.Config.ExposedPorts,
			Labels: img.Config.Labels, StopSignal: img.Config.StopSignal,
		},
	}
	if out.Names == nil {
		out.Names = []string{}
	}
	if !img.Created.IsZero() {
		t := img.Created
		out.Created = &t
	}
	if !img.ImportedAt.IsZero() {
		t := img.ImportedAt
		out.ImportedAt = &t
	}
	for _, l := range img.Layers {
		out.Layers = append(out.Layers, api.ImageLayer{DiffID: l.DiffID, Blob: l.Blob, MediaType: l.MediaType, Size: l.Size, BlobSize: l.BlobSize})
	}
	return out
}
