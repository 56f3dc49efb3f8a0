package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/sandboxd/sandboxd/api"
	"github.com/sandboxd/sandboxd/client"
	"github.com/sandboxd/sandboxd/internal/testdaemon"
)

// file is one member of a layer the tests assemble.
type file struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
}

func layerOf(t *testing.T, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: f.mode, Linkname: f.link, Uid: f.uid, Gid: f.uid, ModTime: time.Unix(1700000000, 0)}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(f.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(f.body))
	}
	tw.Close()
	return buf.Bytes()
}

func dir(name string) file { return file{name: name, typ: tar.TypeDir, mode: 0o755} }

// busyboxFiles is a root of Debian's static busybox: sh and the usual
// tools as symlinks, and no bash.
func busyboxFiles(t *testing.T) []file {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("needs the static busybox of busybox-static at /bin/busybox")
	}
	files := []file{dir("bin"), dir("tmp"), dir("etc"), {name: "bin/busybox", body: string(bb), mode: 0o755},
		{name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\n"}}
	for _, tool := range []string{"sh", "ls", "cat", "echo", "id", "pwd", "env", "mkdir", "rm", "sleep", "ps", "grep", "stat", "readlink", "wc", "du"} {
		files = append(files, file{name: "bin/" + tool, typ: tar.TypeSymlink, link: "busybox"})
	}
	return files
}

// imageOf builds an image of layers with cfg.
func imageOf(t *testing.T, cfg v1.Config, layers ...[]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		data := l
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", goruntime.GOARCH, cfg
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// importImage uploads img as a docker save tarball under name.
func importImage(t *testing.T, c *client.Client, img v1.Image, as string) *api.Image {
	t.Helper()
	var buf bytes.Buffer
	tag, _ := name.NewTag("example.com/test/" + strings.ReplaceAll(as, ":", "-") + ":latest")
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	got, err := c.ImportImage(ctxT(t, 2*time.Minute), &buf, as)
	if err != nil {
		t.Fatalf("importing %s: %v", as, err)
	}
	return got
}

// TestImageBusyboxWithoutBash: an image with only busybox (no bash, no
// libc) is a full sandbox: exec and sessions run in sh; the image's ENV
// and WORKDIR are honoured; the sandbox records its image digest and keeps
// it when the name moves on; the image cannot be removed while in use.
func TestImageBusyboxWithoutBash(t *testing.T) {
	d := daemon(t)
	ctx := ctxT(t, 3*time.Minute)
	img := imageOf(t, v1.Config{Env: []string{"PATH=/bin", "GREETING=from-image", "OVERRIDDEN=image"}, WorkingDir: "/srv/app"},
		layerOf(t, busyboxFiles(t)...), layerOf(t, dir("srv"), file{name: "srv/version", body: "one\n"}))
	imported := importImage(t, d.Client, img, "bb")
	want, _ := img.ConfigName()
	if imported.Digest != want.String() || imported.Names[0] != "bb" {
		t.Fatalf("imported = %+v", imported)
	}

	sb := d.Client.Sandbox("bb-one", client.WithImage("bb"), client.WithEnv(map[string]string{"OVERRIDDEN": "sandbox"}))
	info, err := sb.Ensure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Image != "bb" || info.ImageDigest != want.String() {
		t.Errorf("sandbox image = %q %q, want bb %s", info.Image, info.ImageDigest, want)
	}
	if got := trim(run(t, sb, `echo "$GREETING $OVERRIDDEN"; pwd; readlink /proc/$$/exe; cat /srv/version; test -e /bin/bash || echo no-bash`)); got != "from-image sandbox\n/srv/app\n/bin/busybox\none\nno-bash" {
		t.Errorf("in the busybox sandbox: %q", got)
	}
	// The session's state persists in sh too.
	run(t, sb, "cd /tmp && export X=kept && f() { echo \"fn $1\"; }")
	if got := trim(run(t, sb, "pwd; echo $X; f ok")); got != "/tmp\nkept\nfn ok" {
		t.Errorf("session state in sh = %q", got)
	}

	// In use: refused.
	if err := d.Client.RemoveImage(ctx, "bb"); !errors.Is(err, client.ErrConflict) {
		t.Fatalf("removing an image in use = %v, want IMAGE_IN_USE", err)
	}
	// Re-point the name: a new sandbox gets the new image, the old one
	// keeps its own, also after its container is restarted.
	img2 := imageOf(t, v1.Config{Env: []string{"PATH=/bin"}}, layerOf(t, busyboxFiles(t)...), layerOf(t, dir("srv"), file{name: "srv/version", body: "two\n"}))
	importImage(t, d.Client, img2, "bb")
	if got := trim(run(t, d.Client.Sandbox("bb-two", client.WithImage("bb")), "cat /srv/version")); got != "two" {
		t.Errorf("new sandbox of the re-pointed name sees %q", got)
	}
	killContainers(t, d)
	if got := trim(run(t, sb, "cat /srv/version; echo $GREETING")); got != "one\nfrom-image" {
		t.Errorf("old sandbox after its image name moved and its container restarted: %q", got)
	}
	list, err := d.Client.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var unnamed bool
	for _, i := range list {
		if i.Digest == want.String() && len(i.Names) == 0 {
			unnamed = true
		}
	}
	if !unnamed {
		t.Errorf("the old image is not listed without a name: %+v", list)
	}
	// Both gone: the images and their layers go too.
	for _, id := range []string{"bb-one", "bb-two"} {
		if err := d.Client.Sandbox(id).Destroy(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An image a sandbox has just resolved is safe from collection for
	// a few seconds (until the sandbox's record names it): wait them out.
	time.Sleep(6 * time.Second)
	if err := d.Client.RemoveImage(ctx, "bb"); err != nil {
		t.Fatal(err)
	}
	layers, _ := os.ReadDir(filepath.Join(d.StateDir, "images", "layers"))
	for _, l := range layers {
		if l.Name() != "empty" {
			t.Errorf("layer %s left after every image and sandbox went", l.Name())
		}
	}
	if _, err := d.Client.Image(ctx, "bb"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("removed image = %v", err)
	}
	if _, err := d.Client.Sandbox("nope", client.WithImage("no-such-image")).Ensure(ctx); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("sandbox of a missing image = %v, want IMAGE_NOT_FOUND", err)
	} else if e := new(client.Error); errors.As(err, &e) && e.Code != api.CodeImageNotFound {
		t.Errorf("code = %s", e.Code)
	}
}

// killContainers kills every container of d, as a crash would; the next
// call restarts each sandbox.
func killContainers(t *testing.T, d *testdaemon.Daemon) {
	t.Helper()
	root := filepath.Join(d.RunDir, "runtime")
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		for _, rt := range []string{"crun", "runc"} {
			exec.Command(rt, "--root", root, "kill", e.Name(), "KILL").Run()
		}
	}
	time.Sleep(200 * time.Millisecond)
}

// TestImageMuslAndSharing: an Alpine-like image (musl's dynamic loader and
// a musl-linked program, busybox for sh) runs, and two sandboxes of one
// image share one unpacked copy of it.
func TestImageMuslAndSharing(t *testing.T) {
	d := daemon(t)
	if _, err := exec.LookPath("musl-gcc"); err != nil {
		t.Skip("needs musl-gcc (apt-get install musl-tools) to build the musl image")
	}
	ctx := ctxT(t, 3*time.Minute)
	work := t.TempDir()
	src := filepath.Join(work, "hello.c")
	os.WriteFile(src, []byte("#include <stdio.h>\nint main(void){printf(\"hello from musl\\n\");return 0;}\n"), 0o644)
	bin := filepath.Join(work, "hello")
	if out, err := exec.Command("musl-gcc", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("musl-gcc: %v\n%s", err, out)
	}
	hello, _ := os.ReadFile(bin)
	loader, err := os.ReadFile("/lib/ld-musl-" + map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[goruntime.GOARCH] + ".so.1")
	if err != nil {
		t.Skip("no musl loader on this host")
	}
	img := imageOf(t, v1.Config{Env: []string{"PATH=/usr/bin:/bin"}},
		layerOf(t, busyboxFiles(t)...),
		layerOf(t, dir("lib"), file{name: "lib/ld-musl-x86_64.so.1", body: string(loader), mode: 0o755},
			dir("usr"), dir("usr/bin"), file{name: "usr/bin/hello", body: string(hello), mode: 0o755}))
	importImage(t, d.Client, img, "alpine-like:1")
	for _, id := range []string{"musl-a", "musl-b"} {
		sb := d.Client.Sandbox(id, client.WithImage("alpine-like:1"))
		if got := trim(run(t, sb, "hello; echo $0")); got != "hello from musl\nsh" {
			t.Errorf("%s: %q", id, got)
		}
		run(t, sb, "echo mine > /tmp/"+id)
	}
	if _, err := d.Client.Image(ctx, "alpine-like:1"); err != nil {
		t.Error(err)
	}
	layers, _ := os.ReadDir(filepath.Join(d.StateDir, "images", "layers"))
	if len(layers) != 2 {
		t.Errorf("%d layer directories for one two-layer image used by two sandboxes, want 2", len(layers))
	}
	// A sandbox that overwrites and deletes the image's files changes only
	// its own view: the shared layers are read-only lowers.
	run(t, d.Client.Sandbox("musl-a"), "echo tampered > /usr/bin/hello; rm /lib/ld-musl-x86_64.so.1")
	if got := trim(run(t, d.Client.Sandbox("musl-b"), "hello")); got != "hello from musl" {
		t.Errorf("musl-b after musl-a tampered with the image: %q", got)
	}
	// Each sandbox's writes are its own.
	if code, _ := exitOf(t, d.Client.Sandbox("musl-b"), "test -e /tmp/musl-a"); code == 0 {
		t.Error("musl-b sees a file musl-a wrote")
	}
}

// TestImagePullWithWhiteoutsAndAuth pulls, from a registry on loopback
// behind basic auth (credentials from the daemon's --registry-auth docker
// config), an image whose upper layers delete files and change owners.
func TestImagePullWithWhiteoutsAndAuth(t *testing.T) {
	testdaemon.SkipUnlessRoot(t)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "ci" || p != "pw" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}`, http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	authFile := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(authFile, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte("ci:pw")))), 0o600)
	d := testdaemon.Start(t, testdaemon.Options{Args: []string{"--registry-auth", authFile}})

	img := imageOf(t, v1.Config{Env: []string{"PATH=/bin"}},
		layerOf(t, append(busyboxFiles(t), dir("data"), file{name: "data/secret", body: "old"}, file{name: "data/keep", body: "keep"},
			dir("cache"), file{name: "cache/a", body: "a"})...),
		layerOf(t, dir("data"), file{name: "data/.wh.secret"}, dir("cache"), file{name: "cache/.wh..wh..opq"}, file{name: "cache/b", body: "b"},
			file{name: "data/keep", body: "keep", mode: 0o600, uid: 4242}))
	ref := host + "/team/wh:1"
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: "ci", Password: "pw"})); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 2*time.Minute)
	pulled, err := d.Client.PullImage(ctx, ref, "wh")
	if err != nil {
		t.Fatal(err)
	}
	if len(pulled.Layers) != 2 || !strings.HasPrefix(pulled.Source, "registry ") {
		t.Errorf("pulled = %+v", pulled)
	}
	sb := d.Client.Sandbox("wh", client.WithImage("wh"))
	got := trim(run(t, sb, "ls /data; ls /cache; stat -c '%u %a' /data/keep; cat /data/secret 2>&1 || true"))
	if got != "keep\nb\n4242 600\ncat: can't open '/data/secret': No such file or directory" {
		t.Errorf("in the pulled image: %q", got)
	}
	if _, err := d.Client.PullImage(ctx, host+"/team/wh:missing", ""); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("pulling a missing tag = %v, want IMAGE_NOT_FOUND", err)
	}
}

// TestImageBuildOffline builds a Dockerfile FROM an imported image on the
// daemon (buildah), with the network unreachable for RUN, and runs a
// sandbox of the result.
func TestImageBuildOffline(t *testing.T) {
	d := daemon(t)
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Skip("needs buildah (apt-get install buildah)")
	}
	ctx := ctxT(t, 5*time.Minute)
	importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin"}}, layerOf(t, busyboxFiles(t)...)), "bb")
	buildCtx := layerOf(t,
		file{name: "Dockerfile", body: "FROM bb\nARG WHO=world\nENV WHO=$WHO\nWORKDIR /app\nCOPY greet.sh /app/\nRUN chmod +x /app/greet.sh && echo built > /app/stamp\nEXPOSE 8080\nCMD [\"/app/greet.sh\"]\n"},
		file{name: "greet.sh", body: "#!/bin/sh\necho hello $WHO\n"})
	var logs []string
	img, err := d.Client.BuildImage(ctx, bytes.NewReader(buildCtx), client.BuildOptions{
		Name: "greeter", Args: map[string]string{"WHO": "sandboxd"},
		OnLog: func(_, line string) { logs = append(logs, line) },
	})
	if err != nil {
		t.Fatalf("build: %v\n%s", err, strings.Join(logs, "\n"))
	}
	if len(logs) == 0 || img.Config.WorkingDir != "/app" || strings.Join(img.Config.Cmd, " ") != "/app/greet.sh" {
		t.Errorf("built %+v with %d log lines", img.Config, len(logs))
	}
	sb := d.Client.Sandbox("greeter", client.WithImage("greeter"))
	if got := trim(run(t, sb, "./greet.sh; cat stamp")); got != "hello sandboxd\nbuilt" {
		t.Errorf("in the built image: %q", got)
	}
	// The image's CMD runs as the background process "main", with its
	// logs like any process.
	main := sb.Process("main")
	if code, err := main.WaitForExit(ctx, 30*time.Second); err != nil || code != 0 {
		t.Errorf("main: exit %d, %v", code, err)
	}
	if logs, err := main.Logs(ctx); err != nil || string(logs.Stdout) != "hello sandboxd\n" {
		t.Errorf("main's logs = %+v, %v", logs, err)
	}
	procs, err := sb.ListProcesses(ctx)
	if err != nil || len(procs) != 1 || procs[0].ID != "main" || procs[0].Command != "'/app/greet.sh'" {
		t.Errorf("processes = %+v, %v", procs, err)
	}
	// The image's CMD goes to the agent, privately: user code does not see
	// the variable that carries it.
	if got := trim(run(t, sb, "env | grep -c SANDBOXD_AGENT || true")); got != "0" {
		t.Errorf("user code sees %s SANDBOXD_AGENT variables", got)
	}
	_, err = d.Client.BuildImage(ctx, bytes.NewReader(layerOf(t, file{name: "Dockerfile", body: "FROM bb\nRUN echo failing step >&2; exit 7\n"})),
		client.BuildOptions{Name: "broken"})
	var e *client.Error
	if !errors.As(err, &e) || e.Code != api.CodeImageBuildFailed || !strings.Contains(e.Message, "failing step") {
		t.Errorf("failing build = %v", err)
	}
}

// TestImageCLI drives the image verbs of the CLI.
func TestImageCLI(t *testing.T) {
	d := daemon(t)
	img := imageOf(t, v1.Config{Env: []string{"PATH=/bin"}}, layerOf(t, busyboxFiles(t)...))
	layoutDir := t.TempDir()
	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(testdaemon.BinDir(t), "sandbox"), args...)
		cmd.Env = append(os.Environ(), "SANDBOX_URL="+d.URL, "SANDBOX_TOKEN="+d.Token)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli("image", "import", "--name", "cli-bb", layoutDir); err != nil || !strings.Contains(out, "cli-bb sha256:") {
		t.Fatalf("image import: %v\n%s", err, out)
	}
	if out, err := cli("image", "ls"); err != nil || !strings.Contains(out, "cli-bb") || !strings.Contains(out, "host") {
		t.Errorf("image ls: %v\n%s", err, out)
	}
	if out, err := cli("image", "inspect", "cli-bb"); err != nil || !strings.Contains(out, `"PATH=/bin"`) {
		t.Errorf("image inspect: %v\n%s", err, out)
	}
	if out, err := cli("create", "--image", "cli-bb", "cli-box"); err != nil {
		t.Fatalf("create --image: %v\n%s", err, out)
	}
	if out, err := cli("exec", "cli-box", "--", "readlink /proc/$$/exe"); err != nil || trim(out) != "/bin/busybox" {
		t.Errorf("exec: %v %q", err, out)
	}
	if out, err := cli("image", "rm", "cli-bb"); err == nil || !strings.Contains(out, "IMAGE_IN_USE") {
		t.Errorf("image rm in use: %v\n%s", err, out)
	}
	if out, err := cli("rm", "cli-box"); err != nil {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	if out, err := cli("image", "rm", "cli-bb"); err != nil {
		t.Errorf("image rm: %v\n%s", err, out)
	}
	if out, err := cli("image", "inspect", "cli-bb"); err == nil || !strings.Contains(out, "IMAGE_NOT_FOUND") {
		t.Errorf("inspect after rm: %v\n%s", err, out)
	}
}

// TestImageBase builds the base image (once per machine: the recipe's
// result is cached in /var/cache/sandboxd; the first build downloads a few
// hundred MB from Debian and takes a few minutes) and checks what users
// expect of it. Skipped with -short.
func TestImageBase(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the base image (minutes the first time on a machine); skipped with -short")
	}
	d := daemon(t)
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Skip("needs mmdebstrap (apt-get install mmdebstrap) to build the base image")
	}
	t.Log("TestImageBase needs the base image: it builds it with mmdebstrap, or imports the cached build from /var/cache/sandboxd")
	ctx := ctxT(t, 20*time.Minute)
	start := time.Now()
	img, err := d.Client.BuildBaseImage(ctx, false, func(_, line string) {})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("base image %s: %d MB unpacked, %d MB compressed, ready in %s", img.Digest, img.Size>>20, img.BlobSize>>20, time.Since(start).Round(time.Second))
	sb := d.Client.Sandbox("base", client.WithImage("base"), client.WithLimits(api.Limits{MemoryBytes: 1 << 30}))
	res, err := sb.Exec(ctx, "python3 -c 'import pandas, matplotlib, numpy, IPython; print(\"ok\")' && node --version && npm --version && git --version && curl --version | head -1 && jq --version && gcc --version | head -1 && make --version | head -1 && pwd && bash -c 'echo $BASH_VERSION' && pip --version && zip -v | head -2 && ps --version && vim --version | head -1 && nano --version | head -1")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "ok\nv18.") || !strings.Contains(res.Stdout, "git version") || !strings.Contains(res.Stdout, "/workspace") {
		t.Errorf("base image tools: exit %d\n%s\n%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if out := trim(run(t, sb, "find /usr/share/man /usr/share/info /usr/share/doc -type f ! -name copyright ! -path /usr/share/info/dir 2>/dev/null | wc -l; find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias | wc -l")); out != "0\n0" {
		t.Errorf("the base image is not slimmed (man pages, docs, locales): %q", out)
	}
}

// TestImageUserRunsTheDefaultSession: an image whose USER names a user
// gets its default session as that user (made on demand when the image's
// /etc does not have it); a numeric USER runs as that ID, as Docker runs
// it (an account "u<ID>" made when the image has none).
func TestImageUserRunsTheDefaultSession(t *testing.T) {
	d := daemon(t)
	layer := layerOf(t, append(busyboxFiles(t), dir("etc"), dir("srv"),
		file{name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\n"},
		file{name: "etc/group", body: "root:x:0:\n"})...)
	importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin"}, User: "app:app", WorkingDir: "/srv"}, layer), "as-app")
	importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin"}, User: "1000"}, layer), "as-uid")
	app := d.Client.Sandbox("user-app", client.WithImage("as-app"))
	if got := trim(run(t, app, "id -un; pwd")); got != "app\n/srv" {
		t.Errorf("USER app: %q", got)
	}
	uid := d.Client.Sandbox("user-uid", client.WithImage("as-uid"))
	if got := trim(run(t, uid, "id -u; id -g; id -un; cd && touch mine && stat -c %u mine")); got != "1000\n1000\nu1000\n1000" {
		t.Errorf("USER 1000: %q, want ID 1000 (group 1000, account u1000) owning what it makes", got)
	}
}

// TestImageWithoutTmp: an image with no /tmp gives its sandbox one, a
// directory with mode 1777 in the sandbox's writable layer, that a user
// program can write to.
func TestImageWithoutTmp(t *testing.T) {
	d := daemon(t)
	var files []file
	for _, f := range busyboxFiles(t) {
		if f.name != "tmp" {
			files = append(files, f)
		}
	}
	importImage(t, d.Client, imageOf(t, v1.Config{Env: []string{"PATH=/bin"}}, layerOf(t, files...)), "notmp")
	sb := d.Client.Sandbox("notmp", client.WithImage("notmp"))
	if got := trim(run(t, sb, "stat -c '%a %F' /tmp && echo written > /tmp/f && cat /tmp/f")); got != "1777 directory\nwritten" {
		t.Errorf("/tmp in an image without one: %q, want a 1777 directory one can write to", got)
	}
}
