package image

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/cgroup"
	"github.com/sandboxd/sandboxd/internal/osthread"
)

// Bounds of a build.
const (
	maxContextBytes   = 2 << 30
	maxContextEntries = 200_000
	maxBuildArgs      = 64
)

// BuildOptions describe a Dockerfile build.
type BuildOptions struct {
	// Name is what the result is stored under (a tenant's: Scoped, and its
	// FROM lines see what that tenant sees). Required.
	Name string
	// Context is the build context as a tar stream (bounded to 2 GiB).
	Context io.Reader
	// Dockerfile is the Dockerfile's path in the context; default
	// "Dockerfile".
	Dockerfile string
	// Args are build arguments (ARG), at most 64.
	Args map[string]string
	// Log receives the builder's output, line by line.
	Log LogFunc
}

// LogFunc receives one line of a builder's output (without its newline)
// and the stream it came from ("stdout" or "stderr"). It is called from
// one goroutine at a time.
type LogFunc func(stream, line string)

var buildArgName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Build builds a Dockerfile with buildah and imports the result under
// opts.Name. The images its FROM lines (and COPY --from) name are taken
// from the store; one that is not there is pulled into the store first,
// when its registry is reachable, so builds from local images work
// offline. RUN steps have no network. Builds run one at a time.
func (s *Store) Build(ctx context.Context, opts BuildOptions) (Image, error) {
	if err := validateKey(opts.Name); err != nil {
		return Image{}, err
	}
	if opts.Dockerfile == "" {
		opts.Dockerfile = "Dockerfile"
	}
	if len(opts.Args) > maxBuildArgs {
		return Image{}, fmt.Errorf("%w: %d build args; at most %d are allowed", ErrInvalid, len(opts.Args), maxBuildArgs)
	}
	for k, v := range opts.Args {
		if !buildArgName.MatchString(k) || strings.ContainsRune(v, 0) {
			return Image{}, fmt.Errorf("%w: build arg %q is not NAME=value", ErrInvalid, k)
		}
	}
	if opts.Log == nil {
		opts.Log = func(string, string) {}
	}
	buildahPath, err := exec.LookPath("buildah")
	if err != nil {
		return Image{}, fmt.Errorf("%w: buildah is not installed (apt-get install buildah)", ErrBuilderMissing)
	}
	tmp, err := s.tmpDir("build-")
	if err != nil {
		return Image{}, err
	}
	defer os.RemoveAll(tmp)
	ctxDir := filepath.Join(tmp, "context")
	if err := extractContext(ctx, opts.Context, ctxDir); err != nil {
		return Image{}, err
	}
	dockerfile, err := cleanEntryName(opts.Dockerfile)
	if err != nil || dockerfile == "." {
		return Image{}, fmt.Errorf("%w: dockerfile path %q", ErrInvalid, opts.Dockerfile)
	}
	root, err := os.OpenRoot(ctxDir)
	if err != nil {
		return Image{}, err
	}
	df, err := root.Open(dockerfile)
	root.Close()
	if err != nil {
		return Image{}, fmt.Errorf("%w: the context has no %s", ErrInvalid, opts.Dockerfile)
	}
	text, err := readBounded(df, 1<<20, "the Dockerfile")
	df.Close()
	if err != nil {
		return Image{}, err
	}
	froms := dockerfileImages(string(text))

	s.buildMu.Lock()
	defer s.buildMu.Unlock()
	job, err := s.opts.Jobs.Start()
	if err != nil {
		return Image{}, err
	}
	// Deferred first, so it runs last: after the rmi below.
	defer job.End()
	b := &buildah{path: buildahPath, store: s, policy: filepath.Join(tmp, "policy.json"), job: job}
	if err := os.WriteFile(b.policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		return Image{}, err
	}
	b.prune(ctx)
	ns, _ := SplitScoped(opts.Name)
	for _, ref := range froms {
		if err := b.load(ctx, ns, ref, tmp, opts.Log); err != nil {
			return Image{}, err
		}
	}
	tag := "localhost/sandboxd-build-" + newShort() + ":latest"
	args := []string{"build", "--pull=never", "--network=none", "--isolation=oci", "--layers=false",
		"--signature-policy", b.policy, "--format=oci", "-f", filepath.Join(ctxDir, dockerfile), "-t", tag}
	if s.opts.BuildRuntime != "" {
		args = append(args, "--runtime", s.opts.BuildRuntime)
	}
	if parent := job.Parent(); parent != "" {
		// RUN steps' containers in the job's cgroup, not at the root.
		args = append(args, "--cgroup-parent", parent)
	}
	for k, v := range opts.Args {
		args = append(args, "--build-arg", k+"="+v)
	}
	args = append(args, ctxDir)
	if err := b.run(ctx, opts.Log, args...); err != nil {
		return Image{}, fmt.Errorf("%w: %v", ErrBuildFailed, err)
	}
	defer b.quiet(context.WithoutCancel(ctx), "rmi", "-f", tag)
	out := filepath.Join(tmp, "out")
	// Uncompressed: the layers the result shares with its FROM image are
	// already in the store and are not read again; only new layers are.
	if err := b.run(ctx, nil, "push", "--quiet", "--disable-compression", "--signature-policy", b.policy, tag, "oci:"+out); err != nil {
		return Image{}, fmt.Errorf("exporting the built image: %w", err)
	}
	opts.Log("stdout", "importing the result as "+opts.Name)
	rootDir, err := os.OpenRoot(out)
	if err != nil {
		return Image{}, err
	}
	defer rootDir.Close()
	src, _, err := ociSource(dirFiles{rootDir}, "")
	if err != nil {
		return Image{}, err
	}
	src.kind = "build"
	r, err := s.ingest(ctx, src)
	if err != nil {
		return Image{}, err
	}
	if err := s.tag(opts.Name, r.Digest); err != nil {
		return Image{}, err
	}
	s.log.Info("image built", "name", opts.Name, "digest", r.Digest)
	return s.Inspect(ctx, opts.Name)
}

// buildah drives the buildah CLI on the store's build storage.
type buildah struct {
	path   string
	store  *Store
	policy string
	// job is the build's cgroup; every buildah command starts in it.
	job *cgroup.Job
}

func (b *buildah) globalArgs() []string {
	return []string{"--root", filepath.Join(b.store.opts.BuildRoot, "storage"), "--runroot", b.store.opts.RunRoot, "--storage-driver", "overlay"}
}

// command makes a buildah command with a parent-death signal: run it only
// inside osthread.Hold (which says why).
func (b *buildah) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, b.path, append(b.globalArgs(), args...)...)
	// Not the daemon's registries or credentials: builds resolve images
	// only in their own storage (--pull=never).
	cmd.Env = append(os.Environ(), "BUILDAH_LAYERS=false")
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	b.job.Attach(cmd)
	return cmd
}

// run runs buildah, sending its output to log line by line (or, with a
// nil log, keeping the tail for the error).
func (b *buildah) run(ctx context.Context, log LogFunc, args ...string) error {
	cmd := b.command(ctx, args...)
	tail := &tailBuffer{max: 2048}
	var mu sync.Mutex
	emit := func(stream string) io.Writer {
		return lineWriter(func(line string) {
			mu.Lock()
			defer mu.Unlock()
			tail.add(line)
			if log != nil {
				log(stream, line)
			}
		})
	}
	stdout, stderr := emit("stdout"), emit("stderr")
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := osthread.Hold(cmd.Run)
	stdout.(*lineBuf).flush()
	stderr.(*lineBuf).flush()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("buildah %s: %w: %s", args[0], err, tail.String())
	}
	return nil
}

func (b *buildah) quiet(ctx context.Context, args ...string) error {
	return osthread.Hold(b.command(ctx, args...).Run)
}

// load makes the image ref (a store name or a registry reference) available
// to buildah under that name.
func (b *buildah) load(ctx context.Context, ns, ref, tmp string, log LogFunc) error {
	s := b.store
	if ref == HostName {
		return fmt.Errorf("%w: FROM host: the host image is not an OCI image and cannot be built from; use base or another image", ErrInvalid)
	}
	// A tenant's build sees what the tenant sees (Find), and what it
	// pulls is the tenant's.
	key, _, err := s.Find(ns, ref)
	var img Image
	if err == nil {
		img, err = s.Inspect(ctx, key)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidName) {
		log("stdout", fmt.Sprintf("%s is not in the image store; pulling it", ref))
		if img, err = s.Pull(ctx, ref, Scoped(ns, "")); err != nil {
			return fmt.Errorf("FROM %s: not in the image store, and pulling it failed: %w", ref, err)
		}
	} else if err != nil {
		return err
	}
	name := buildahName(ref)
	// Already loaded (by an earlier build): just point the name at it.
	if b.quiet(ctx, "tag", hexOf(img.Digest), name) == nil {
		return nil
	}
	dir := filepath.Join(tmp, "from-"+short(img.Digest))
	if err := s.exportLayout(img, dir); err != nil {
		return fmt.Errorf("exporting %s for the builder: %w", ref, err)
	}
	log("stdout", fmt.Sprintf("loading %s (%s) into the builder", ref, short(img.Digest)))
	// buildah names what it pulls from a layout after the layout's path,
	// which must then be a valid (lower-case) reference; the state
	// directory's path need not be. The layout is passed as a descriptor,
	// so its name is always /proc/self/fd/3.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	cmd := b.command(ctx, "pull", "--quiet", "--signature-policy", b.policy, "oci:/proc/self/fd/3")
	cmd.ExtraFiles = []*os.File{d}
	var out []byte
	if err := osthread.Hold(func() (err error) { out, err = cmd.CombinedOutput(); return err }); err != nil {
		return fmt.Errorf("loading %s into the builder: %w: %s", ref, err, strings.TrimSpace(string(out)))
	}
	if err := b.run(ctx, nil, "tag", hexOf(img.Digest), name); err != nil {
		return fmt.Errorf("naming %s in the builder: %w", ref, err)
	}
	b.quiet(ctx, "rmi", "localhost/proc/self/fd/3")
	return nil
}

// buildahName is the name buildah finds ref under: a name without a
// registry host is a "localhost/" one for it.
func buildahName(ref string) string {
	first, _, found := strings.Cut(ref, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return ref
	}
	return "localhost/" + ref
}

// prune removes from buildah's storage the images the store no longer
// has, and any working container a crashed build left.
func (b *buildah) prune(ctx context.Context) {
	b.quiet(ctx, "rm", "--all")
	var out []byte
	cmd := b.command(ctx, "images", "--json")
	if err := osthread.Hold(func() (err error) { out, err = cmd.Output(); return err }); err != nil {
		return
	}
	var imgs []struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(out, &imgs) != nil {
		return
	}
	for _, i := range imgs {
		if _, err := b.store.readRecord("sha256:" + i.ID); err != nil {
			b.quiet(ctx, "rmi", "-f", i.ID)
		}
	}
}

// exportLayout writes img as an OCI image layout in dir, with its blobs
// hard-linked from the store (same file system: no copy).
func (s *Store) exportLayout(img Image, dir string) error {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o700); err != nil {
		return err
	}
	r, err := s.readRecord(img.Digest)
	if err != nil {
		return err
	}
	digests := []string{r.ManifestDigest, r.Digest}
	for _, l := range r.Layers {
		digests = append(digests, l.Blob)
	}
	for _, d := range digests {
		src := filepath.Join(s.dir, "blobs", "sha256", hexOf(d))
		dst := filepath.Join(blobs, hexOf(d))
		if err := os.Link(src, dst); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	fi, err := os.Stat(filepath.Join(s.dir, "blobs", "sha256", hexOf(r.ManifestDigest)))
	if err != nil {
		return err
	}
	index := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d}]}`,
		r.ManifestDigest, fi.Size())
	if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte(index), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o600)
}

// dockerfileImages returns the images a Dockerfile builds from: FROM
// images that are not earlier stages or scratch, and COPY --from images.
// References with build arguments in them are left to the builder.
func dockerfileImages(text string) []string {
	var out []string
	seen := map[string]bool{}
	stages := map[string]bool{}
	add := func(ref string) {
		low := strings.ToLower(ref)
		if ref == "" || strings.Contains(ref, "$") || low == "scratch" || stages[low] || seen[ref] {
			return
		}
		if _, err := fmt.Sscanf(ref, "%d", new(int)); err == nil && strings.Trim(ref, "0123456789") == "" {
			return // COPY --from=0: a stage index
		}
		seen[ref] = true
		out = append(out, ref)
	}
	for _, line := range dockerfileLines(text) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			args := fields[1:]
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				args = args[1:]
			}
			if len(args) == 0 {
				continue
			}
			add(args[0])
			if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
				stages[strings.ToLower(args[2])] = true
			}
		case "COPY", "ADD":
			for _, a := range fields[1:] {
				if v, ok := strings.CutPrefix(a, "--from="); ok {
					add(v)
				}
			}
		}
	}
	return out
}

// dockerfileLines joins continuation lines and drops comments.
func dockerfileLines(text string) []string {
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// extractContext unpacks a build context tar into dir: directories,
// regular files and symlinks only, owned by root, bounded in size and
// count, every path resolved inside dir.
func extractContext(ctx context.Context, r io.Reader, dir string) error {
	if r == nil {
		return fmt.Errorf("%w: no build context", ErrInvalid)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var total int64
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: the build context is not a valid tar: %v", ErrInvalid, err)
		}
		if n >= maxContextEntries {
			return fmt.Errorf("%w: the build context has more than %d entries", ErrTooLarge, maxContextEntries)
		}
		if n%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		name, err := cleanEntryName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		if parent := path.Dir(name); parent != "." {
			if err := root.MkdirAll(parent, 0o755); err != nil {
				return fmt.Errorf("%w: context path %q: %v", ErrInvalid, name, err)
			}
		}
		mode := os.FileMode(hdr.Mode) & 0o777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return fmt.Errorf("%w: context path %q: %v", ErrInvalid, name, err)
			}
			root.Chmod(name, mode|0o700)
		case tar.TypeReg: // tar.Reader reports legacy TypeRegA as TypeReg
			if total += hdr.Size; hdr.Size < 0 || total > maxContextBytes {
				return fmt.Errorf("%w: the build context is larger than %d bytes", ErrTooLarge, maxContextBytes)
			}
			root.Remove(name)
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, mode|0o600)
			if err != nil {
				return fmt.Errorf("%w: context path %q: %v", ErrInvalid, name, err)
			}
			_, err = io.Copy(f, io.LimitReader(tr, hdr.Size))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("writing the build context: %w", err)
			}
		case tar.TypeSymlink:
			root.Remove(name)
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return fmt.Errorf("%w: context path %q: %v", ErrInvalid, name, err)
			}
		}
	}
}

// lineBuf splits what is written into lines.
type lineBuf struct {
	mu   sync.Mutex
	buf  []byte
	emit func(string)
}

func lineWriter(emit func(string)) io.Writer { return &lineBuf{emit: emit} }

// maxLogLine bounds one log line; longer ones are cut.
const maxLogLine = 8 << 10

func (l *lineBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		l.emit(strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > maxLogLine {
		l.emit(string(l.buf))
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineBuf) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(string(l.buf))
		l.buf = nil
	}
}

// tailBuffer keeps the last bytes of a log for error messages.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) add(line string) {
	t.b = append(t.b, line...)
	t.b = append(t.b, '\n')
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }
