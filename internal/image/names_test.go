package image

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestTenantNames: a tenant's names are its own, the admin namespace's are
// shared, and another tenant's names and digests are not found.
func TestTenantNames(t *testing.T) {
	skipUnlessRoot(t)
	s := openStore(t, map[string]bool{})
	ctx := ctxT(t)
	shared := testImage(t, v1.Config{Env: []string{"WHO=admin"}}, layerTar(t, f("x", "admin")))
	mine := testImage(t, v1.Config{Env: []string{"WHO=a"}}, layerTar(t, f("x", "a")))
	theirs := testImage(t, v1.Config{Env: []string{"WHO=b"}}, layerTar(t, f("x", "b")))
	is, err := s.ImportLayout(ctx, writeLayout(t, shared), "py")
	if err != nil {
		t.Fatal(err)
	}
	ia, err := s.ImportLayout(ctx, writeLayout(t, mine), Scoped("team-a", "py"))
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.ImportLayout(ctx, writeLayout(t, theirs), Scoped("team-b", "only-b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns, name, key string
		shared        bool
		err           error
	}{
		{"", "py", "py", false, nil},
		{"team-a", "py", "team-a~py", false, nil},    // its own first
		{"team-b", "py", "py", true, nil},            // the shared one
		{"team-a", "only-b", "", false, ErrNotFound}, // another tenant's
		{"team-a", "team-b~only-b", "", false, ErrInvalidName},
		{"team-a", ib.Digest, "", false, ErrNotFound}, // nor by digest
		{"team-b", ib.Digest, ib.Digest, false, nil},
		{"team-b", ia.Digest, "", false, ErrNotFound},
		{"team-b", is.Digest, is.Digest, true, nil},
		{"team-a", "host", "host", true, nil},
	} {
		key, sh, err := s.Find(tc.ns, tc.name)
		if key != tc.key || sh != tc.shared || !errors.Is(err, tc.err) {
			t.Errorf("Find(%q, %q) = %q, %v, %v; want %q, %v, %v", tc.ns, tc.name, key, sh, err, tc.key, tc.shared, tc.err)
		}
	}
	own, sh := Visible("team-a", []string{"py", "team-a~py", "team-b~only-b"})
	if !slices.Equal(own, []string{"py"}) || !slices.Equal(sh, []string{"py"}) {
		t.Errorf("Visible: own %v shared %v", own, sh)
	}
	// An archive's own name lands in the tenant's namespace.
	p := filepath.Join(t.TempDir(), "saved.tar")
	tag, _ := name.NewTag("example.com/team/b:v1")
	if err := tarball.WriteToFile(p, tag, theirs); err != nil {
		t.Fatal(err)
	}
	img, err := s.ImportArchive(ctx, p, Scoped("team-b", ""))
	if err != nil || !slices.Contains(img.Names, "team-b~example.com/team/b:v1") {
		t.Errorf("import with the archive's name: %v %v", img.Names, err)
	}
	if _, err := s.Pull(ctx, "", Scoped("team-a", "")); !errors.Is(err, ErrInvalidName) {
		t.Errorf("empty ref: %v", err)
	}
}
