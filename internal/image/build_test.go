package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/sandboxd/sandboxd/internal/osthread/osthreadtest"
)

// busyboxLayer is a root file system of Debian's static busybox: /bin/sh
// and friends as symlinks to it.
func busyboxLayer(t testing.TB) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("needs a static busybox at /bin/busybox (apt-get install busybox-static)")
	}
	entries := []entry{d("bin"), {name: "bin/busybox", body: string(bb), mode: 0o755}, d("tmp"), d("etc")}
	for _, tool := range []string{"sh", "ls", "cat", "echo", "id", "mkdir", "sleep", "env", "pwd", "stat", "test"} {
		entries = append(entries, sl("bin/"+tool, "busybox"))
	}
	return layerTar(t, entries...)
}

func TestDockerfileImages(t *testing.T) {
	df := `# syntax=docker/dockerfile:1
ARG V=1
FROM --platform=linux/amd64 base AS build
RUN echo \
  hi
FROM build AS second
COPY --from=build /x /y
COPY --from=example.com/tools:1 /bin/tool /bin/
COPY --from=0 /a /b
FROM scratch
from alpine:$V
FROM busybox:latest
`
	got := dockerfileImages(df)
	want := []string{"base", "example.com/tools:1", "busybox:latest"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

func TestBuahNames(t *testing.T) {
	for in, want := range map[string]string{
		"base": "localhost/base", "alpine:3": "localhost/alpine:3", "team/app:v1": "localhost/team/app:v1",
		"example.com/team/app:v1": "example.com/team/app:v1", "127.0.0.1:5000/x": "127.0.0.1:5000/x",
	} {
		if got := buildahName(in); got != want {
			t.Errorf("buildahName(%q) = %q, want %q", in, got, want)
		}
	}
}

func contextTar(t testing.TB, files map[string]string) io.Reader {
	t.Helper()
	var entries []entry
	for n, body := range files {
		entries = append(entries, f(n, body))
	}
	return bytes.NewReader(layerTar(t, entries...))
}

// TestBuildDockerfile builds, offline, a Dockerfile whose FROM is an image
// of the store, using every instruction the issue lists, and a second one
// whose FROM is only in a registry (pulled into the store first).
func TestBuildDockerfile(t *testing.T) {
	skipUnlessRoot(t)
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("needs buildah (apt-get install buildah)")
	}
	s := openStore(t, nil)
	s.opts.BuildRoot = filepath.Join(t.TempDir(), "build")
	s.opts.RunRoot = filepath.Join(s.opts.BuildRoot, "run")
	t.Cleanup(func() {
		// buildah's overlay storage leaves mounts below its root.
		exec.Command("buildah", "--root", filepath.Join(s.opts.BuildRoot, "storage"), "--runroot", s.opts.RunRoot, "rmi", "--all", "-f").Run()
		exec.Command("umount", "-R", "-l", filepath.Join(s.opts.BuildRoot, "storage", "overlay")).Run()
	})
	// Every build below shares this bound, a guard against a hang, not a
	// speed check: the whole package takes 8-11 s in a quiet CI, 70 s in
	// one that ran 4x slow, and this test alone took over 2 minutes (the
	// bound ctxT gives) at load 30.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	bb := testImage(t, v1.Config{Env: []string{"PATH=/bin"}}, busyboxLayer(t))
	if _, err := s.ImportLayout(ctx, writeLayout(t, bb), "bb"); err != nil {
		t.Fatal(err)
	}
	dockerfile := `FROM bb
ARG GREETING=hello
ENV GREETING=$GREETING APP_HOME=/app
WORKDIR /app
RUN echo "built by $(id -u)" > /app/built.txt && mkdir -p /data && echo "net:$(cat /proc/net/dev | grep -c :)" > /app/net.txt
COPY hello.txt /app/
ADD conf/app.conf /etc/app.conf
USER 1000:1000
EXPOSE 8080/tcp
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo main; sleep 1000"]
`
	var logs []string
	img, err := s.Build(ctx, BuildOptions{
		Name: "built:v1", Args: map[string]string{"GREETING": "bonjour"},
		Context: contextTar(t, map[string]string{"Dockerfile": dockerfile, "hello.txt": "hi there\n", "conf/app.conf": "k=v\n"}),
		Log:     func(stream, line string) { logs = append(logs, line) },
	})
	if err != nil {
		t.Fatalf("build: %v\nlog:\n%s", err, strings.Join(logs, "\n"))
	}
	if !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "STEP") }) {
		t.Errorf("no build steps in the log:\n%s", strings.Join(logs, "\n"))
	}
	c := img.Config
	if c.WorkingDir != "/app" || c.User != "1000:1000" || !slices.Contains(c.Env, "GREETING=bonjour") ||
		!slices.Contains(c.ExposedPorts, "8080/tcp") || strings.Join(c.Entrypoint, " ") != "/bin/sh -c" || strings.Join(c.Cmd, " ") != "echo main; sleep 1000" {
		t.Errorf("built config = %+v", c)
	}
	// The FROM image's layer is shared, not copied.
	base, _ := s.Inspect(ctx, "bb")
	if len(img.Layers) != 2 || img.Layers[0].DiffID != base.Layers[0].DiffID {
		t.Errorf("built layers = %+v, want bb's layer then one new one", img.Layers)
	}
	r, err := s.Resolve(ctx, "built:v1")
	if err != nil {
		t.Fatal(err)
	}
	root := mountImage(t, r)
	for p, want := range map[string]string{
		"app/built.txt": "built by 0\n", "app/hello.txt": "hi there\n", "etc/app.conf": "k=v\n",
		"app/net.txt": "net:1\n", // RUN steps see only loopback
	} {
		if got, _ := os.ReadFile(filepath.Join(root, p)); string(got) != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}

	t.Run("FROM a registry image", func(t *testing.T) {
		srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
		defer srv.Close()
		ref := strings.TrimPrefix(srv.URL, "http://") + "/remote/bb:1"
		r, _ := name.ParseReference(ref)
		if err := remote.Write(r, bb); err != nil {
			t.Fatal(err)
		}
		_, err := s.Build(ctx, BuildOptions{
			Name:    "from-registry",
			Context: contextTar(t, map[string]string{"Dockerfile": "FROM " + ref + "\nRUN echo ok > /ok\n"}),
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Inspect(ctx, ref); err != nil {
			t.Errorf("the FROM image was not pulled into the store: %v", err)
		}
	})
	t.Run("failing RUN", func(t *testing.T) {
		_, err := s.Build(ctx, BuildOptions{
			Name:    "fails",
			Context: contextTar(t, map[string]string{"Dockerfile": "FROM bb\nRUN exit 3\n"}),
		})
		if !errors.Is(err, ErrBuildFailed) {
			t.Errorf("build = %v, want ErrBuildFailed", err)
		}
	})
	t.Run("FROM a missing image", func(t *testing.T) {
		_, err := s.Build(ctx, BuildOptions{
			Name:    "missing",
			Context: contextTar(t, map[string]string{"Dockerfile": "FROM 127.0.0.1:1/nothing:here\n"}),
		})
		if err == nil {
			t.Error("build from a missing image worked")
		}
	})
	t.Run("context symlink to a host file", func(t *testing.T) {
		// The context is the client's; a symlink in it must not copy a
		// file of the daemon's host into the image.
		ctxTar := bytes.NewReader(layerTar(t,
			f("Dockerfile", "FROM bb\nCOPY secret /copied\nCOPY dir/ /dircopy/\n"),
			sl("secret", "/etc/shadow"), sl("dir", "/etc")))
		_, err := s.Build(ctx, BuildOptions{Name: "symlinks", Context: ctxTar})
		if err == nil {
			r, err := s.Resolve(ctx, "symlinks")
			if err != nil {
				t.Fatal(err)
			}
			root := mountImage(t, r)
			host, _ := os.ReadFile("/etc/shadow")
			for _, p := range []string{"copied", "dircopy/shadow"} {
				if got, err := os.ReadFile(filepath.Join(root, p)); err == nil && len(host) > 0 && bytes.Equal(got, host) {
					t.Errorf("the image's /%s is the host's /etc/shadow", p)
				}
			}
		}
	})
	t.Run("context escaping", func(t *testing.T) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "../../escaped", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
		tw.Write([]byte("x"))
		tw.Close()
		_, err := s.Build(ctx, BuildOptions{Name: "esc", Context: &buf})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("build = %v, want ErrInvalid", err)
		}
	})
}

// TestBuildahOutlivesEndedThreads: buildah has a parent-death signal,
// which the kernel sends when the thread that forked it ends; the daemon's
// goroutines end threads all the time (a locked goroutine that ends, on
// every sandbox start). buildah calls made meanwhile all run to their end.
func TestBuildahOutlivesEndedThreads(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "buildah")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nsleep 0.3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b := &buildah{path: fake, store: &Store{opts: Options{BuildRoot: dir, RunRoot: dir}}}
	osthreadtest.RunWhileThreadsEnd(t, 16, func() error { return b.run(t.Context(), nil, "version") })
}
