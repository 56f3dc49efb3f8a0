package image

import (
	"fmt"
	"strings"
)

// Tenants' images (docs/tenants.md). The names a tenant gives its images
// are its own: tenant team-a's "python" is stored as "team-a~python". An
// image name never contains TenantSep (it is not among the characters
// ValidateName allows), so the names of the admin namespace, which every
// tenant sees and uses as the daemon's shared images, can never be taken
// for a tenant's, and no tenant name can be made of one.
const TenantSep = "~"

// Scoped is the store's name for tenant ns's image name ("" is the admin
// namespace: name itself). Scoped(ns, "") stands for "the name the image
// itself gives, in ns" where imports take one from the archive.
func Scoped(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + TenantSep + name
}

// SplitScoped splits a store name into its tenant ("" for the admin
// namespace) and the tenant's name.
func SplitScoped(key string) (ns, name string) {
	if ns, name, ok := strings.Cut(key, TenantSep); ok {
		return ns, name
	}
	return "", key
}

// validateKey checks a store name: a valid name, in a tenant's
// namespace or not.
func validateKey(key string) error {
	ns, name := SplitScoped(key)
	if ns != "" && (strings.Contains(name, TenantSep) || !nameRE.MatchString(ns)) {
		return fmt.Errorf("%w: %q", ErrInvalidName, key)
	}
	return ValidateName(name)
}

// Find is the store name a caller in namespace ns means by name, and
// whether that image is shared (the admin namespace's, or the host image)
// rather than ns's own. In the admin namespace (ns "") every name means
// itself. A tenant's name is its own image if it has one of that name,
// else the admin namespace's; a digest only when ns or the admin
// namespace names that image. Anything else is ErrNotFound, as if the
// image did not exist: a tenant never learns another tenant's names.
func (s *Store) Find(ns, name string) (key string, shared bool, err error) {
	if ns == "" {
		return name, false, nil
	}
	if name == HostName {
		return name, true, nil
	}
	notFound := fmt.Errorf("%w: %q", ErrNotFound, name)
	if !IsDigest(name) {
		if err := ValidateName(name); err != nil {
			return "", false, err
		}
	}
	s.mu.Lock()
	names, err := s.names()
	s.mu.Unlock()
	if err != nil {
		return "", false, err
	}
	if IsDigest(name) {
		own, shared := false, false
		for k, d := range names {
			if d == name {
				switch n, _ := SplitScoped(k); n {
				case ns:
					own = true
				case "":
					shared = true
				}
			}
		}
		if !own && !shared {
			return "", false, notFound
		}
		return name, !own, nil
	}
	if _, ok := names[Scoped(ns, name)]; ok {
		return Scoped(ns, name), false, nil
	}
	if _, ok := names[name]; ok {
		return name, true, nil
	}
	return "", false, notFound
}

// Visible splits an image's store names into those of namespace ns (as ns
// calls them) and the shared ones of the admin namespace; for ns "" every
// name is its own. An image with neither is not ns's to see.
func Visible(ns string, names []string) (own, shared []string) {
	if ns == "" {
		return names, nil
	}
	for _, k := range names {
		switch n, local := SplitScoped(k); n {
		case ns:
			own = append(own, local)
		case "":
			shared = append(shared, k)
		}
	}
	return own, shared
}
