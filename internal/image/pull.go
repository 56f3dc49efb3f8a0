package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	goruntime "runtime"
	"strings"

	"github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// maxRefLength bounds an image reference.
const maxRefLength = 512

// Pull fetches the image ref from its registry (for linux and this host's
// architecture when ref names an index) and stores it under name; an empty
// name means the reference as given. Registry credentials come from the
// store's keychain (a docker config file). as may be a tenant's name
// (Scoped); Scoped(ns, "") means the reference as given, in ns.
func (s *Store) Pull(ctx context.Context, ref, as string) (Image, error) {
	if ref == "" || len(ref) > maxRefLength {
		return Image{}, fmt.Errorf("%w: reference must be 1-%d bytes", ErrInvalidName, maxRefLength)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, fmt.Errorf("%w: %q is not an image reference: %v", ErrInvalidName, ref, err)
	}
	if ns, local := SplitScoped(as); local == "" {
		as = Scoped(ns, ref)
	}
	if err := validateKey(as); err != nil {
		return Image{}, err
	}
	img, err := remote.Image(r,
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(s.opts.Keychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}),
		remote.WithUserAgent("sandboxd"),
	)
	if err != nil {
		return Image{}, registryError(ref, err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return Image{}, registryError(ref, err)
	}
	if len(rawManifest) > maxManifestBytes {
		return Image{}, fmt.Errorf("%w: manifest is larger than %d bytes", ErrTooLarge, maxManifestBytes)
	}
	m, err := img.Manifest()
	if err != nil {
		return Image{}, registryError(ref, err)
	}
	var total int64
	for _, l := range m.Layers {
		total += l.Size
	}
	if total > s.opts.MaxImageBytes {
		return Image{}, fmt.Errorf("%w: its layers are %d bytes compressed; the limit is %d", ErrTooLarge, total, s.opts.MaxImageBytes)
	}
	src, err := manifestSource("registry "+r.String(), m,
		func(d v1.Descriptor, max int64) ([]byte, error) {
			if d.Size > max {
				return nil, fmt.Errorf("%w: config is larger than %d bytes", ErrTooLarge, max)
			}
			raw, err := img.RawConfigFile()
			if err != nil {
				return nil, registryError(ref, err)
			}
			return raw, nil
		},
		func(d v1.Descriptor) func(context.Context) (io.ReadCloser, error) {
			return func(context.Context) (io.ReadCloser, error) {
				l, err := img.LayerByDigest(d.Digest)
				if err != nil {
					return nil, registryError(ref, err)
				}
				rc, err := l.Compressed()
				if err != nil {
					return nil, registryError(ref, err)
				}
				return rc, nil
			}
		})
	if err != nil {
		return Image{}, err
	}
	rec, err := s.ingest(ctx, src)
	if err != nil {
		return Image{}, err
	}
	if err := s.tag(as, rec.Digest); err != nil {
		return Image{}, err
	}
	s.log.Info("image pulled", "ref", ref, "name", as, "digest", rec.Digest)
	return s.Inspect(ctx, as)
}

// registryError classifies what the registry client returned.
func registryError(ref string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %s: %v", ErrRegistryDenied, ref, err)
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s is not in its registry: %v", ErrNotFound, ref, err)
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode:
				return fmt.Errorf("%w: %s is not in its registry: %v", ErrNotFound, ref, err)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("%w: %s: %v", ErrRegistryDenied, ref, err)
			}
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if strings.Contains(err.Error(), "unsupported MediaType") {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, ref, err)
	}
	return fmt.Errorf("%w: pulling %s: %v", ErrRegistry, ref, err)
}

// KeychainFromFile returns a keychain that reads registry credentials
// from the docker config file at path (its "auths", and the credential
// helpers it names). The file is read at each pull, so edits apply
// without a restart. An empty path means the daemon user's default
// ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
func KeychainFromFile(path string) authn.Keychain {
	if path == "" {
		return authn.DefaultKeychain
	}
	return fileKeychain{path: path}
}

type fileKeychain struct{ path string }

func (k fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	f, err := os.Open(k.path)
	if err != nil {
		return nil, fmt.Errorf("reading registry credentials: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading registry credentials from %s: %w", k.path, err)
	}
	key := target.RegistryStr()
	if key == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return nil, err
	}
	if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
	}), nil
}
