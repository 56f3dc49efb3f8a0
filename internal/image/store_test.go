package image

import (
	"archive/tar"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/rootfs"
)

// whiteoutImage is a three-layer image: the base has files, the second
// deletes one (whiteout), hides a directory's old contents (opaque) and
// changes an owner, the third adds a file owned by a user.
func whiteoutImage(t testing.TB) v1.Image {
	base := layerTar(t,
		d("etc"), f("etc/motd", "welcome"), f("etc/keep", "kept"),
		d("var"), d("var/cache"), f("var/cache/old1", "1"), f("var/cache/old2", "2"),
		entry{name: "srv/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "srv/data", body: "data", mode: 0o644},
		d("bin"), entry{name: "bin/sh", body: "#!fake", mode: 0o755},
	)
	mid := layerTar(t,
		d("etc"), f("etc/.wh.motd", ""),
		d("var/cache"), f("var/cache/.wh..wh..opq", ""), f("var/cache/new", "new"),
		entry{name: "srv/data", body: "data", mode: 0o600, uid: 1000, gid: 1000},
	)
	top := layerTar(t,
		entry{name: "home/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "home/user/", typ: tar.TypeDir, mode: 0o700, uid: 1000, gid: 1000},
		entry{name: "home/user/.profile", body: "export A=1", mode: 0o644, uid: 1000, gid: 1000},
	)
	return testImage(t, v1.Config{
		Env: []string{"PATH=/bin", "GREETING=hi"}, WorkingDir: "/srv", User: "1000",
		Cmd: []string{"/bin/sh", "-c", "sleep 1000"}, ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Labels: map[string]string{"org.example": "yes"},
	}, base, mid, top)
}

// mountImage mounts the image's layers as an overlay (as a sandbox would)
// and returns the merged root.
func mountImage(t *testing.T, img *rootfs.Image) string {
	t.Helper()
	dir := t.TempDir()
	ov := rootfs.Overlay{Layers: img.Layers, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Target: filepath.Join(dir, "root")}
	if err := ov.Mount(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ov.Unmount() })
	return ov.Target
}

func checkWhiteoutImage(t *testing.T, s *Store, ref string) {
	t.Helper()
	img, err := s.Resolve(ctxT(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 3 || img.WorkingDir != "/srv" || img.Env[1] != "GREETING=hi" || strings.Join(img.Cmd, " ") != "/bin/sh -c sleep 1000" {
		t.Errorf("resolved image = %+v", img)
	}
	root := mountImage(t, img)
	if _, err := os.Lstat(filepath.Join(root, "etc/motd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("etc/motd, deleted in layer 2, is visible: %v", err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "etc/keep")); string(data) != "kept" {
		t.Errorf("etc/keep = %q", data)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "var/cache"))
	if len(entries) != 1 || entries[0].Name() != "new" {
		t.Errorf("var/cache (opaque in layer 2) = %v, want only new", entries)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "srv/data"), &st); err != nil || st.Uid != 1000 || st.Mode&0o777 != 0o600 {
		t.Errorf("srv/data: owner %d mode %o (%v), want 1000 and 600", st.Uid, st.Mode&0o777, err)
	}
	if err := unix.Stat(filepath.Join(root, "home/user"), &st); err != nil || st.Uid != 1000 || st.Mode&0o777 != 0o700 {
		t.Errorf("home/user: owner %d mode %o (%v)", st.Uid, st.Mode&0o777, err)
	}
}

func TestImportOCILayoutAndDockerArchive(t *testing.T) {
	skipUnlessRoot(t)
	img := whiteoutImage(t)
	s := openStore(t, nil)
	ctx := ctxT(t)

	t.Run("oci layout tar", func(t *testing.T) {
		got, err := s.ImportArchive(ctx, tarDir(t, writeLayout(t, img)), "wh")
		if err != nil {
			t.Fatal(err)
		}
		want, _ := img.ConfigName()
		if got.Digest != want.String() || got.Source != "oci-layout" || len(got.Layers) != 3 {
			t.Errorf("imported %+v, want digest %s", got, want)
		}
		c := got.Config
		if c.User != "1000" || c.WorkingDir != "/srv" || c.ExposedPorts[0] != "8080/tcp" || c.Labels["org.example"] != "yes" {
			t.Errorf("config = %+v", c)
		}
		checkWhiteoutImage(t, s, "wh")
	})
	t.Run("docker save tar", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "saved.tar")
		tag, _ := name.NewTag("example.com/team/wh:v1")
		if err := tarball.WriteToFile(p, tag, img); err != nil {
			t.Fatal(err)
		}
		got, err := s.ImportArchive(ctx, p, "") // the archive's own tag names it
		if err != nil {
			t.Fatal(err)
		}
		if got.Names[0] != "example.com/team/wh:v1" || got.Source != "docker-archive" {
			t.Errorf("imported %+v", got)
		}
		checkWhiteoutImage(t, s, "example.com/team/wh:v1")
		// Same image, same layers: nothing was unpacked twice.
		layers, _ := os.ReadDir(filepath.Join(s.Dir(), "layers"))
		if len(layers) != 3 {
			t.Errorf("%d layer directories after importing one image twice, want 3", len(layers))
		}
	})
	t.Run("oci layout directory", func(t *testing.T) {
		if _, err := s.ImportLayout(ctx, writeLayout(t, img), "wh-dir"); err != nil {
			t.Fatal(err)
		}
		checkWhiteoutImage(t, s, "wh-dir")
	})
}

// TestImportRefusesTamperedImages changes a byte of each part of a valid
// layout and checks the import fails with ErrInvalid and leaves nothing.
func TestImportRefusesTamperedImages(t *testing.T) {
	skipUnlessRoot(t)
	img := testImage(t, v1.Config{}, layerTar(t, f("a", "hello")), layerTar(t, f("b", "world")))
	m, _ := img.Manifest()
	cfgName, _ := img.ConfigName()
	tests := []struct {
		name   string
		mutate func(dir string)
	}{
		{"layer blob", func(dir string) { flipByte(t, filepath.Join(dir, "blobs/sha256", m.Layers[1].Digest.Hex), 100) }},
		{"config blob", func(dir string) { flipByte(t, filepath.Join(dir, "blobs/sha256", cfgName.Hex), 10) }},
		{"diff id in config", func(dir string) {
			// A config that names another diff ID, with a manifest that
			// matches it: the layer's content no longer matches.
			p := filepath.Join(dir, "blobs/sha256", cfgName.Hex)
			data, _ := os.ReadFile(p)
			c, _ := img.ConfigFile()
			data = []byte(strings.Replace(string(data), c.RootFS.DiffIDs[0].Hex, strings.Repeat("0", 64), 1))
			rewriteConfig(t, dir, data)
		}},
		{"layer blob replaced by a longer one", func(dir string) {
			p := filepath.Join(dir, "blobs/sha256", m.Layers[0].Digest.Hex)
			data, _ := os.ReadFile(p)
			os.WriteFile(p, append(data, make([]byte, 1024)...), 0o644)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, nil)
			dir := writeLayout(t, img)
			tc.mutate(dir)
			_, err := s.ImportLayout(ctxT(t), dir, "bad")
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("import = %v, want ErrInvalid", err)
			}
			if _, err := s.Resolve(ctxT(t), "bad"); !errors.Is(err, ErrNotFound) {
				t.Errorf("a refused image resolves: %v", err)
			}
			for _, sub := range []string{"records", "tmp"} {
				if entries, _ := os.ReadDir(filepath.Join(s.Dir(), sub)); len(entries) != 0 {
					t.Errorf("%s/ holds %d entries after a refused import", sub, len(entries))
				}
			}
		})
	}
}

func flipByte(t *testing.T, p string, off int) {
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[off%len(data)] ^= 0xff
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// rewriteConfig replaces the layout's config with data and fixes the
// manifest and index so that only the diff IDs disagree with the layers.
func rewriteConfig(t *testing.T, dir string, data []byte) {
	h, size, _ := v1.SHA256(strings.NewReader(string(data)))
	os.WriteFile(filepath.Join(dir, "blobs/sha256", h.Hex), data, 0o644)
	idx, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	im, _ := v1.ParseIndexManifest(strings.NewReader(string(idx)))
	mp := filepath.Join(dir, "blobs/sha256", im.Manifests[0].Digest.Hex)
	mraw, _ := os.ReadFile(mp)
	m, _ := v1.ParseManifest(strings.NewReader(string(mraw)))
	m.Config.Digest, m.Config.Size = h, size
	mraw = mustJSON(t, m)
	mh, msize, _ := v1.SHA256(strings.NewReader(string(mraw)))
	os.WriteFile(filepath.Join(dir, "blobs/sha256", mh.Hex), mraw, 0o644)
	im.Manifests[0].Digest, im.Manifests[0].Size = mh, msize
	os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, im), 0o644)
}

func TestImportRefusesWrongPlatformAndTooManyLayers(t *testing.T) {
	skipUnlessRoot(t)
	s := openStore(t, nil)
	s.opts.MaxLayers = 2
	img := testImage(t, v1.Config{}, layerTar(t, f("a", "1")), layerTar(t, f("b", "2")), layerTar(t, f("c", "3")))
	if _, err := s.ImportLayout(ctxT(t), writeLayout(t, img), "many"); !errors.Is(err, ErrTooLarge) {
		t.Errorf("3 layers with a limit of 2: %v, want ErrTooLarge", err)
	}
	if _, err := s.ImportArchive(ctxT(t), filepath.Join(t.TempDir(), "missing.tar"), "x"); err == nil {
		t.Error("importing a missing file worked")
	}
	notImage := filepath.Join(t.TempDir(), "not.tar")
	os.WriteFile(notImage, layerTar(t, f("hello.txt", "hi")), 0o644)
	if _, err := s.ImportArchive(ctxT(t), notImage, "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a plain tar: %v, want ErrInvalid", err)
	}
	garbage := filepath.Join(t.TempDir(), "garbage.tar")
	os.WriteFile(garbage, []byte(strings.Repeat("not a tar ", 100)), 0o644)
	if _, err := s.ImportArchive(ctxT(t), garbage, "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("garbage: %v, want ErrInvalid", err)
	}
}

// TestSharingRemoveAndGC: two images share a base layer, unpacked once;
// removing one keeps the shared layer; an image a sandbox uses cannot be
// removed, and stays (without its name) when re-pointed.
func TestSharingRemoveAndGC(t *testing.T) {
	skipUnlessRoot(t)
	inUse := map[string]bool{}
	s := openStore(t, inUse)
	ctx := ctxT(t)
	shared := layerTar(t, f("shared", strings.Repeat("s", 10000)))
	a := testImage(t, v1.Config{Env: []string{"WHO=a"}}, shared, layerTar(t, f("a", "a")))
	b := testImage(t, v1.Config{Env: []string{"WHO=b"}}, shared, layerTar(t, f("b", "b")))
	ia, err := s.ImportLayout(ctx, writeLayout(t, a), "a")
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.ImportLayout(ctx, writeLayout(t, b), "b")
	if err != nil {
		t.Fatal(err)
	}
	countLayers := func() int {
		e, _ := os.ReadDir(filepath.Join(s.Dir(), "layers"))
		return len(e)
	}
	if n := countLayers(); n != 3 {
		t.Fatalf("%d layer directories for two images sharing one layer, want 3", n)
	}
	ra, _ := s.Resolve(ctx, "a")
	rb, _ := s.Resolve(ctx, "b")
	if ra.Layers[0] != rb.Layers[0] {
		t.Errorf("shared layer has two directories: %s and %s", ra.Layers[0], rb.Layers[0])
	}

	// A sandbox uses a: refused.
	inUse[ia.Digest] = true
	if err := s.Remove(ctx, "a"); !errors.Is(err, ErrInUse) {
		t.Fatalf("removing an image in use = %v, want ErrInUse", err)
	}
	// Re-point the name a at b's image: the old one stays for its
	// sandbox, reachable by digest.
	if err := s.tag("a", ib.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if img, err := s.Resolve(ctx, ia.Digest); err != nil || img.Env[0] != "WHO=a" {
		t.Fatalf("the sandbox's image by digest after its name moved: %v %v", img, err)
	}
	// The sandbox goes; its image is collected (once no longer pinned).
	delete(inUse, ia.Digest)
	s.mu.Lock()
	s.pinned = map[string]time.Time{}
	s.mu.Unlock()
	st, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Images != 1 || st.Layers != 1 {
		t.Errorf("GC = %+v, want 1 image and 1 layer", st)
	}
	if _, err := s.Resolve(ctx, ia.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("collected image still resolves: %v", err)
	}
	if n := countLayers(); n != 2 {
		t.Errorf("%d layers left, want 2 (the shared one and b's)", n)
	}
	// Removing the last names removes everything.
	for _, n := range []string{"a", "b"} {
		if err := s.Remove(ctx, n); err != nil {
			t.Fatalf("remove %s: %v", n, err)
		}
	}
	s.mu.Lock()
	s.pinned = map[string]time.Time{}
	s.mu.Unlock()
	if _, err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"layers", "records", "l", "blobs/sha256"} {
		if e, _ := os.ReadDir(filepath.Join(s.Dir(), sub)); len(e) != 0 {
			t.Errorf("%s/ still has %d entries", sub, len(e))
		}
	}
	if err := s.Remove(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing a missing image = %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctx, "host"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("removing host = %v", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"base", "alpine:3.19", "registry.local:5000/team/app@sha256:abc", "a"} {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", "host", "sha256:" + strings.Repeat("a", 64), "-x", "a b", "a\x00", strings.Repeat("a", 256), "../x", "/abs"} {
		if err := ValidateName(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

// TestPullFromRegistryWithAuth pulls from go-containerregistry's registry
// on loopback behind basic auth, with credentials from a docker config
// file.
func TestPullFromRegistryWithAuth(t *testing.T) {
	skipUnlessRoot(t)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "puller" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}`, http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img := whiteoutImage(t)
	ref, _ := name.ParseReference(host + "/team/wh:v1")
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte("puller:s3cret"))
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)), 0o600)
	kc := KeychainFromFile(cfgPath)
	if err := remote.Write(ref, img, remote.WithAuthFromKeychain(kc)); err != nil {
		t.Fatal(err)
	}

	s := openStore(t, nil)
	s.opts.Keychain = kc
	got, err := s.Pull(ctxT(t), ref.String(), "")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.ConfigName()
	if got.Digest != want.String() || got.Names[0] != ref.String() {
		t.Errorf("pulled %+v", got)
	}
	checkWhiteoutImage(t, s, ref.String())

	t.Run("wrong credentials", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(bad, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte("puller:wrong")))), 0o600)
		s := openStore(t, nil)
		s.opts.Keychain = KeychainFromFile(bad)
		if _, err := s.Pull(ctxT(t), ref.String(), "x"); !errors.Is(err, ErrRegistryDenied) {
			t.Errorf("pull = %v, want ErrRegistryDenied", err)
		}
	})
	t.Run("missing tag", func(t *testing.T) {
		if _, err := s.Pull(ctxT(t), host+"/team/wh:nope", "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("pull = %v, want ErrNotFound", err)
		}
	})
	t.Run("no registry", func(t *testing.T) {
		ln := httptest.NewServer(http.NotFoundHandler())
		addr := strings.TrimPrefix(ln.URL, "http://")
		ln.Close()
		if _, err := s.Pull(ctxT(t), addr+"/x:y", "x"); !errors.Is(err, ErrRegistry) {
			t.Errorf("pull = %v, want ErrRegistry", err)
		}
	})
	t.Run("bad reference", func(t *testing.T) {
		if _, err := s.Pull(ctxT(t), "UPPER/Case::", ""); !errors.Is(err, ErrInvalidName) {
			t.Errorf("pull = %v, want ErrInvalidName", err)
		}
	})
}
